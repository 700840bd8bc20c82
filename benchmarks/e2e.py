"""End-to-end validation speed through the Python API: yolov5n on coco128 at 640 (val.py's defaults).

Run from the repository root:  python -m benchmarks.e2e [--imgsz 640] [--workers N] [--skip-sweep]
Prints seconds and images/s (validate()'s own wall time: model load, scan, data, inference, NMS, metrics, report;
not the Python start-up) for
  1. a cold run (no cache);
  2. the disk image cache: the run that fills it, then a warm run (new cache object: it reads the files);
  3. the RAM image cache, warm (a second run in the same process; DataLoader workers 0, see cache/images.py);
  4. a 5-setting threshold sweep: one model run with --save-raw, then 5 evaluate_raw() calls, against 5 full runs
     (the metrics of each pair must be equal);
then the per-stage breakdown of `detval bench`. YOLOv5 v7.0 val.py on this 2-core CPU: 16.0 s for the same call.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from detval.api import evaluate_raw, validate
from detval.cache.images import open_image_cache
from detval.commands.bench import run_stage_bench
from detval.config import ValConfig
from detval.paths import shared_data_dir

SWEEP = [(0.001, 0.6), (0.01, 0.6), (0.001, 0.5), (0.001, 0.7), (0.25, 0.45)]  # (conf, iou)
REFERENCE_WALL_S = 16.0  # val.py v7.0, same data and settings (reference/yolov5n-coco128-default/settings.json)


def _line(label: str, seconds: float, images: int) -> str:
    val_py = REFERENCE_WALL_S * images / 128  # val.py's time for as many images (its whole call: 128 images)
    return f"{label:<44}{seconds:8.2f} s {images / seconds:8.1f} images/s  ({val_py / seconds:.1f}x val.py)"


def _metrics(r) -> tuple:
    return r.p, r.r, r.map50, r.map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: ValConfig's)")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()

    data = shared_data_dir()
    work = Path(tempfile.mkdtemp(prefix="detval-e2e-"))
    base = ValConfig(weights=str(data / "weights" / "yolov5n.pt"), data=str(data / "coco128" / "coco128.yaml"),
                     imgsz=args.imgsz, plots=False, quiet=True, project=str(work / "runs"))
    if args.workers is not None:
        base = replace(base, workers=args.workers)

    def run(label: str, cfg: ValConfig):
        t0 = time.perf_counter()
        r = validate(cfg)
        dt = time.perf_counter() - t0
        print(_line(label, dt, r.images), flush=True)
        return r, dt

    cold, _ = run("cold (no image cache)", base)
    ref_file = data / "reference" / "yolov5n-coco128-default" / "metrics.json"
    if args.imgsz == 640 and ref_file.is_file():
        ref = json.loads(ref_file.read_text())
        diff = max(abs(a - ref[k]) for a, k in zip(_metrics(cold), ("P", "R", "mAP50", "mAP50-95")))
        print(f"  max |metric - val.py reference| = {diff:.2e}")

    disk_dir = work / "images"
    os.environ["DETVAL_CACHE_DIR"] = str(disk_dir)  # the disk cache's default folder
    run("disk cache, first run (fills it)", replace(base, cache="disk"))
    warm, _ = run("disk cache, warm", replace(base, cache="disk"))
    n_files = len(list(disk_dir.rglob("*.npy"))) if disk_dir.exists() else 0
    if n_files == 0:
        print("  NOTE: no cache file written: the engine does not pass an image cache to ValDataset yet")
    ram = open_image_cache("ram")
    run("RAM cache, first run (workers 0)", replace(base, cache="ram", workers=0))
    run("RAM cache, warm (workers 0)", replace(base, cache="ram", workers=0))
    if ram.hits == 0:
        print("  NOTE: no RAM cache hit: the engine does not pass an image cache to ValDataset yet")
    assert _metrics(warm) == _metrics(cold), "the image cache changed the metrics"

    if not args.skip_sweep:
        raw_dir = str(work / "raw")
        t0 = time.perf_counter()
        validate(replace(base, save_raw=raw_dir))
        t_raw = time.perf_counter() - t0
        t_eval, t_full = 0.0, 0.0
        for conf, iou in SWEEP:
            t0 = time.perf_counter()
            fast = evaluate_raw(ValConfig(weights="", data="", save_raw=raw_dir, conf_thres=conf, iou_thres=iou,
                                          plots=False, quiet=True, project=str(work / "runs")))
            t_eval += time.perf_counter() - t0
            t0 = time.perf_counter()
            full = validate(replace(base, conf_thres=conf, iou_thres=iou))
            t_full += time.perf_counter() - t0
            assert _metrics(fast) == _metrics(full), f"conf {conf} iou {iou}: re-evaluation differs from a full run"
            print(f"  conf {conf:<5} iou {iou:<4}  mAP50 {full.map50:.4f}  mAP50-95 {full.map:.4f}  (raw == full)")
        n = cold.images * len(SWEEP)
        print(_line(f"sweep x{len(SWEEP)}: 5 full runs", t_full, n))
        print(_line(f"sweep x{len(SWEEP)}: 1 run --save-raw + 5 evaluate_raw", t_raw + t_eval, n))
        print(f"  (the --save-raw run {t_raw:.2f} s, the 5 re-evaluations {t_eval:.2f} s)")

    print()
    print("\n".join(run_stage_bench(base).lines()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
