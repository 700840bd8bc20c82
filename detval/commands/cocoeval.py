"""`detval cocoeval GT.json DETECTIONS.json`: COCO bbox metrics of a results file, as pycocotools prints them.

Imports only numpy and msgspec (no torch): the whole command is about reading two files and evaluating."""
from __future__ import annotations

import argparse
import json
import sys

from detval.coco.format import per_class_by_name
from detval.errors import DetvalError


def run(args: argparse.Namespace) -> int:
    result, names = evaluate_files(args.gt, args.dets, args.backend)
    if args.json:
        print(json.dumps({"stats": result.stats_dict(), "per_class_ap": per_class_by_name(result.per_class_ap, names)},
                         indent=1))
    else:
        print(result.summary())
    return 0


def evaluate_files(gt_path: str, dets_path: str, backend: str = "detval"):
    """(CocoResult, category id -> name) of a results file against an instances file. Both files are read and
    checked by detval's reader whatever the backend, so that every backend fails the same clean way."""
    from detval.coco.format import load_coco_dets, load_coco_gt
    from detval.coco.evaluate import coco_evaluate

    gt = load_coco_gt(gt_path)
    if not len(gt.ann_ids):
        print(f"WARNING: {gt_path} has no annotations: every COCO metric will be -1", file=sys.stderr)
    dets = load_coco_dets(dets_path, gt)
    if backend == "detval":
        return coco_evaluate(gt, dets), gt.category_names
    if not len(dets):
        raise DetvalError(f"{dets_path}: no detections; {backend} cannot evaluate an empty list "
                          "(the detval backend gives zeros)")
    del dets
    from detval.coco.reference import reference_evaluate
    try:
        return reference_evaluate(backend, gt_path, dets_path), gt.category_names
    except ImportError as e:
        raise DetvalError(f"--backend {backend} needs its package ({e}); pip install 'detval[coco]'") from None
