"""`detval val`: validate a checkpoint on a dataset (flags named as YOLOv5 val.py's)."""
from __future__ import annotations

import argparse
import sys

from detval.coco.format import BACKENDS
from detval.config import ValConfig


def add_parser(sub) -> None:
    p = sub.add_parser("val", help="validate a YOLOv5 checkpoint on a dataset (as val.py)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint (.pt) or state_dict (with --cfg)")
    p.add_argument("--data", required=True, help="data.yaml, or a COCO instances.json with --images")
    p.add_argument("--images", help="image folder for a COCO JSON --data")
    p.add_argument("--cfg", help="model yaml for a plain state_dict")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--conf-thres", type=float, default=0.001)
    p.add_argument("--iou-thres", type=float, default=0.6)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--task", default="val", choices=["train", "val", "test", "speed"])
    p.add_argument("--device", default="", help="cpu, 0, or 0,1,2,3 (one process per device)")
    p.add_argument("--nproc", type=int, default=1, help="processes with --device cpu")
    p.add_argument("--dp", action="store_true", help="DataParallel over the listed CUDA devices (one process)")
    p.add_argument("--schedule", default="dynamic", choices=["dynamic", "static"], help="batch assignment to ranks")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers per process")
    p.add_argument("--single-cls", action="store_true")
    p.add_argument("--verbose", action="store_true", help="per-class rows even when nc >= 50")
    p.add_argument("--save-txt", action="store_true")
    p.add_argument("--save-conf", action="store_true")
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--coco-backend", default="detval", choices=BACKENDS)
    p.add_argument("--half", action="store_true", help="FP16 inference")
    p.add_argument("--save-raw", metavar="DIR", help="store NMS candidates per batch (re-evaluation, resume)")
    p.add_argument("--cache", choices=["ram", "disk"], help="cache decoded, letterboxed images")
    p.add_argument("--cache-dir", help="disk image cache folder (default $DETVAL_CACHE_DIR or ~/.cache/detval/images)")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions (faster on some CPUs; NOT exact)")
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(run=run)


def add_eval_parser(sub) -> None:
    """`detval eval --raw DIR`: the metrics at other thresholds from a raw-output cache, without the model."""
    p = sub.add_parser("eval", help="recompute NMS and metrics from a --save-raw cache",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--raw", dest="save_raw", required=True, metavar="DIR", help="folder written by val --save-raw")
    p.add_argument("--conf-thres", type=float, default=0.001)
    p.add_argument("--iou-thres", type=float, default=0.6)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--single-cls", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--save-txt", action="store_true")
    p.add_argument("--save-conf", action="store_true")
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--coco-backend", default="detval", choices=BACKENDS)
    p.add_argument("--device", default="cpu", choices=["cpu"])
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(run=run, weights="", data="")


def config_from_args(args: argparse.Namespace) -> ValConfig:
    names = set(ValConfig.field_names())
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if values.get("task") == "speed":  # as val.py --task speed: timing thresholds, no plots
        values.update(conf_thres=0.25, iou_thres=0.45, plots=False)
    return ValConfig(**values)


def run(args: argparse.Namespace) -> int:
    from detval.api import evaluate_raw, validate
    from detval.distributed import LaunchError
    from detval.errors import DetvalError

    try:
        cfg = config_from_args(args)
        (validate if cfg.weights else evaluate_raw)(cfg)
    except (DetvalError, LaunchError, ValueError, FileNotFoundError) as e:
        print(f"detval: error: {e}", file=sys.stderr)
        return 1
    return 0
