"""`detval cocoeval GT.json DETECTIONS.json`: COCO bbox metrics of a results file, as pycocotools prints them.

Imports only numpy and msgspec (no torch): the whole command is about reading two files and evaluating."""
from __future__ import annotations

import argparse
import json
import sys

from detval.coco_format import BACKENDS, per_class_by_name
from detval.errors import DetvalError

COCOEVAL_BACKENDS = (*BACKENDS, "ultrafast")   # ultrafast-pycocotools: a reference here, not in `val`
USER_ERROR = 2                                 # the project's exit code for a mistake in the input


def add_parser(sub) -> None:
    p = sub.add_parser("cocoeval", help="COCO mAP of a detections JSON against an instances JSON",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("gt", metavar="GT.json", help="COCO instances (ground truth) file")
    p.add_argument("dets", metavar="DETECTIONS.json", help="COCO results list (e.g. YOLOv5 *_predictions.json)")
    p.add_argument("--iou-type", default="bbox", choices=["bbox"])
    p.add_argument("--json", action="store_true", help="print {stats, per_class_ap} as JSON instead of the summary")
    p.add_argument("--backend", "--coco-backend", dest="backend", default="detval", choices=COCOEVAL_BACKENDS,
                   help="evaluator; the others need the optional packages of the same name (pip install "
                        "'detval[coco]'); every backend gets the input checked by detval's reader first")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        result, names = evaluate_files(args.gt, args.dets, args.backend)
    except DetvalError as e:
        print(f"detval: error: {e}", file=sys.stderr)
        return USER_ERROR
    if args.json:
        print(json.dumps({"stats": result.stats_dict(), "per_class_ap": per_class_by_name(result.per_class_ap, names)},
                         indent=1))
    else:
        print(result.summary())
    return 0


def evaluate_files(gt_path: str, dets_path: str, backend: str = "detval"):
    """(CocoResult, category id -> name) of a results file against an instances file. Both files are read and
    checked by detval's reader whatever the backend, so that every backend fails the same clean way."""
    from detval.coco_format import load_coco_dets, load_coco_gt
    from detval.metrics.coco_eval import coco_evaluate

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
    from detval.metrics.coco_reference import reference_evaluate
    try:
        return reference_evaluate(backend, gt_path, dets_path), gt.category_names
    except ImportError as e:
        raise DetvalError(f"--backend {backend} needs its package ({e}); pip install 'detval[coco]'") from None
