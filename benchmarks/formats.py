"""Wall time of `detval val` per weights format against val.py v7.0's own (the references' settings.json), yolov5n
on coco128 at val.py's defaults (640, batch 32, conf 0.001, --save-json), one process.

Run from the repository root:  python -m benchmarks.formats [--dynamic-onnx FILE]
FILE: an ONNX export with a dynamic batch axis (tests/dynamic_onnx.py makes one): also timed with --export-batch.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time

from detval.api import validate
from detval.config import ValConfig
from detval.paths import shared_data_dir

CASES = {"yolov5n-torchscript": (["yolov5n.torchscript"], {}), "yolov5n-onnx": (["yolov5n.onnx"], {}),
         "yolov5n-onnx-dnn": (["yolov5n.onnx"], {"dnn": True}),
         "yolov5n-ensemble": (["yolov5n.pt", "yolov5n-perturbed.pt"], {}), "yolov5n6-seed0": (["yolov5n6-seed0.pt"], {})}


def _timed(weights: list[str], project: str, name: str, **kw) -> tuple[float, float]:
    d = shared_data_dir()
    t0 = time.perf_counter()
    r = validate(ValConfig(weights=weights, data=str(d / "coco128" / "coco128.yaml"), device="cpu", save_json=True,
                           plots=False, quiet=True, project=project, name=name, **kw))
    return time.perf_counter() - t0, r.map


def _val_py_seconds(case: str) -> float:
    settings = json.loads((shared_data_dir() / "reference" / case / "settings.json").read_text())
    return float(re.search(r"call ([0-9.]+) s", settings["timing"]).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dynamic-onnx", help="an ONNX export with a dynamic batch axis")
    args = ap.parse_args()
    w = shared_data_dir() / "weights"
    with tempfile.TemporaryDirectory() as project:
        for case, (weights, kw) in CASES.items():
            s, m = _timed([str(w / x) for x in weights], project, case, **kw)
            print(f"{case:22s} detval {s:6.1f} s   val.py {_val_py_seconds(case):6.1f} s   mAP50-95 {m:.6f}")
        if args.dynamic_onnx:
            for export_batch in (False, True):
                s, m = _timed([args.dynamic_onnx], project, f"dyn{export_batch}", export_batch=export_batch)
                print(f"dynamic ONNX, {'--export-batch' if export_batch else 'batch 1':14s} detval {s:6.1f} s   "
                      f"mAP50-95 {m:.6f}")


if __name__ == "__main__":
    main()
