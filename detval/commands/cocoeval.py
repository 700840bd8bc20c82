"""`detval cocoeval GT.json DETECTIONS.json`: COCO bbox metrics of a results file, as pycocotools prints them."""
from __future__ import annotations

import argparse
import json
import sys

from detval.coco.format import BACKENDS, per_class_by_name
from detval.errors import DetvalError


def add_parser(sub) -> None:
    p = sub.add_parser("cocoeval", help="COCO mAP of a detections JSON against an instances JSON",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("gt", metavar="GT.json", help="COCO instances (ground truth) file")
    p.add_argument("dets", metavar="DETECTIONS.json", help="COCO results list (e.g. YOLOv5 *_predictions.json)")
    p.add_argument("--iou-type", default="bbox", choices=["bbox"])
    p.add_argument("--json", action="store_true", help="print {stats, per_class_ap} as JSON instead of the summary")
    p.add_argument("--backend", default="detval", choices=BACKENDS,
                   help="evaluator; the others need the optional packages of the same name")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from detval.coco.format import load_coco_dets, load_coco_gt
    from detval.coco.evaluate import coco_evaluate

    try:
        gt = load_coco_gt(args.gt)
        if args.backend == "detval":
            result = coco_evaluate(gt, load_coco_dets(args.dets, gt))
        else:
            from detval.coco.reference import reference_evaluate
            try:
                result = reference_evaluate(args.backend, args.gt, args.dets)
            except ImportError as e:
                raise DetvalError(f"--backend {args.backend} needs its package ({e}); "
                                  "pip install pycocotools faster-coco-eval") from None
    except DetvalError as e:
        print(f"detval: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"stats": result.stats_dict(),
                          "per_class_ap": per_class_by_name(result.per_class_ap, gt.category_names)}, indent=1))
    else:
        print(result.summary())
    return 0
