"""`detval cocoeval GT.json DETECTIONS.json`: COCO bbox metrics of a results file, as pycocotools prints them.

Imports only numpy and msgspec (no torch): the whole command is about reading two files and evaluating. With
--workers (default: one per core for a large file) the detections file is decoded in byte ranges and the
categories are evaluated in forked processes side by side (same numbers)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from detval.coco.format import per_class_by_name
from detval.errors import DetvalError

AUTO_WORKERS_BYTES = 4 << 20   # below this, forking costs about what it saves
MAX_AUTO_WORKERS = 8


def run(args: argparse.Namespace) -> int:
    result, names = evaluate_files(args.gt, args.dets, args.backend, getattr(args, "workers", 0))
    if args.json:
        print(json.dumps({"stats": result.stats_dict(), "per_class_ap": per_class_by_name(result.per_class_ap, names)},
                         indent=1))
    else:
        print(result.summary())
    return 0


def worker_count(dets_path: str, requested: int = 0) -> int:
    """requested if > 0; else one per available core (at most MAX_AUTO_WORKERS) for a file of at least
    AUTO_WORKERS_BYTES, 1 below."""
    if requested < 0:
        raise DetvalError(f"--workers must be >= 0, got {requested}")
    if requested:
        return requested
    from detval.forked import available_cores

    try:
        large = os.path.getsize(dets_path) >= AUTO_WORKERS_BYTES
    except OSError:   # reported by the reader
        large = False
    return min(available_cores(), MAX_AUTO_WORKERS) if large else 1


def evaluate_files(gt_path: str, dets_path: str, backend: str = "detval", workers: int = 0):
    """(CocoResult, category id -> name) of a results file against an instances file. Both files are read and
    checked by detval's reader whatever the backend, so that every backend fails the same clean way."""
    from detval.coco.evaluate import coco_evaluate
    from detval.coco.format import load_coco_dets, load_coco_gt

    workers = worker_count(dets_path, workers)
    gt = load_coco_gt(gt_path)
    if not len(gt.ann_ids):
        print(f"WARNING: {gt_path} has no annotations: every COCO metric will be -1", file=sys.stderr)
    dets = load_coco_dets(dets_path, gt, workers)
    if backend == "detval":
        return coco_evaluate(gt, dets, workers=workers), gt.category_names
    if not len(dets):
        raise DetvalError(f"{dets_path}: no detections; {backend} cannot evaluate an empty list "
                          "(the detval backend gives zeros)")
    del dets
    from detval.coco.reference import reference_evaluate
    try:
        return reference_evaluate(backend, gt_path, dets_path), gt.category_names
    except ImportError as e:
        raise DetvalError(f"--backend {backend} needs its package ({e}); pip install 'detval[coco]'") from None
