"""Record what YOLOv5 v7.0 val.py returns on this machine's CPU kind, for the tests' reference cases.

val.py's digits depend on the CPU's instruction set: its convolutions and vectorized ops round differently on
AVX2 than on AVX-512 (README, Exactness). ../shared/data/reference holds one CPU's runs; this script runs val.py
(a v7.0 checkout, used at run time, never copied) on this machine for the same cases, with the same settings,
and writes them in the same layout to tests/references/<cpu kind>/<case>/, where the tests look first:

    python -m benchmarks.record_references --yolov5 /path/to/yolov5-v7.0 --yolov5-python /path/to/venv/bin/python

Each case folder holds metrics.json (the floats val.run() returned; per-class mAP50-95), settings.json (the
settings, the CPU, the versions, the timing), val_stdout.log, and predictions.json.gz (--save-json) or, for the
default case, predictions/<stem>.txt (--save-txt --save-conf); the --save-hybrid case adds hybrid_labels/.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.oracle import OracleRun
from detval.paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]

# case: (weights, val.run() settings beyond the defaults) as in ../shared/data/SOURCES.md
CASES: dict[str, tuple[list[str], dict]] = {
    "yolov5n-coco128-default": (["yolov5n.pt"], dict(save_txt=True, save_conf=True, verbose=True)),
    "yolov5n-torchscript": (["yolov5n.torchscript"], dict(save_json=True)),
    "yolov5n-onnx": (["yolov5n.onnx"], dict(save_json=True)),
    "yolov5n-onnx-dnn": (["yolov5n.onnx"], dict(save_json=True, dnn=True)),
    "yolov5n-augment": (["yolov5n.pt"], dict(save_json=True, augment=True)),
    "yolov5n-ensemble": (["yolov5n.pt", "yolov5n-perturbed.pt"], dict(save_json=True)),
    "yolov5n-save-hybrid": (["yolov5n.pt"], dict(save_json=True, save_hybrid=True, save_txt=True, save_conf=True)),
    "yolov5n6-seed0": (["yolov5n6-seed0.pt"], dict(save_json=True)),
}

# Run inside val.py's interpreter: val.run() with the settings on argv[1], its return value written to argv[2].
_RUN = """
import json, platform, sys
import cv2, numpy, torch, torchvision
import val
kw = json.loads(sys.argv[1])
(mp, mr, map50, map_, *_), maps, speed = val.run(**kw)
json.dump({"P": mp, "R": mr, "mAP50": map50, "mAP50-95": map_, "maps_per_class_mAP50-95": maps.tolist(),
           "speed": list(speed), "environment": f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
           f"numpy {numpy.__version__}, opencv {cv2.__version__}, Python {platform.python_version()}"},
          open(sys.argv[2], "w"))
"""


def cpu_kind() -> str:
    """The folder name for this machine's CPU kind: the instruction set torch's CPU kernels dispatch to."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def record(oracle: OracleRun, data_dir: Path, case: str, out: Path) -> None:
    weights, extra = CASES[case]
    data = oracle.dataset_view(data_dir / "coco128" / "coco128.yaml")
    kw = dict(data=str(data), weights=[str(data_dir / "weights" / w) for w in weights], batch_size=32, imgsz=640,
              conf_thres=0.001, iou_thres=0.6, max_det=300, device="cpu", half=False, workers=2, plots=False,
              project=str(oracle.scratch / "runs"), name=case, exist_ok=True, **extra)
    result = oracle.scratch / f"{case}.json"
    start = time.perf_counter()
    proc = subprocess.run([oracle.python, "-c", _RUN, json.dumps(kw), str(result)], env=oracle.env(),
                          cwd=oracle.yolov5, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"val.py failed on {case}:\n{proc.stdout}\n{proc.stderr}")
    run_dir = oracle.scratch / "runs" / case
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    metrics = json.loads(result.read_text())
    speed, environment = metrics.pop("speed"), metrics.pop("environment")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (tmp / "val_stdout.log").write_text(proc.stdout + proc.stderr)
    if kw.get("save_json"):
        (pred,) = run_dir.glob("*_predictions.json")
        (tmp / "predictions.json.gz").write_bytes(gzip.compress(pred.read_bytes(), mtime=0))
    if kw.get("save_txt"):
        shutil.copytree(run_dir / "labels", tmp / ("hybrid_labels" if kw.get("save_hybrid") else "predictions"))
    settings = {"reference": "ultralytics/yolov5 tag v7.0, val.run(), recorded by benchmarks/record_references.py",
                "weights": [f"weights/{w}" for w in weights], "data": "coco128/coco128.yaml",
                **{k: v for k, v in kw.items() if k not in ("data", "weights", "project", "name", "exist_ok")},
                "cpu": {"model": cpu_model(), "capability": cpu_kind(), "cores": os.cpu_count()},
                "environment": environment,
                "timing": f"whole call {wall:.1f} s; speed (pre, inference, NMS ms/image) {speed}"}
    (tmp / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{case}: P {metrics['P']:.6f} R {metrics['R']:.6f} mAP50 {metrics['mAP50']:.6f} "
          f"mAP50-95 {metrics['mAP50-95']:.6f} ({wall:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--yolov5", type=Path, required=True, help="a YOLOv5 v7.0 checkout")
    ap.add_argument("--yolov5-python", default=sys.executable, help="the interpreter of val.py's environment")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--out", type=Path, default=None, help="default: tests/references/<cpu kind>")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "tests" / "references" / cpu_kind()
    data_dir = shared_data_dir()
    with tempfile.TemporaryDirectory(prefix="detval-record-") as scratch:
        oracle = OracleRun(args.yolov5.resolve(), args.yolov5_python, Path(scratch))
        for case in args.cases:
            record(oracle, data_dir, case, out / case)


if __name__ == "__main__":
    main()
