"""`detval cocoeval GT.json DETECTIONS.json`: COCO bbox metrics of a results file, as pycocotools prints them."""
from __future__ import annotations

import argparse
import json

from detval.coco.evaluate import coco_evaluate
from detval.coco.format import load_coco_dets, load_coco_gt, per_class_by_name
from detval.errors import DetvalError


def run(args: argparse.Namespace) -> int:
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
    if args.json:
        print(json.dumps({"stats": result.stats_dict(),
                          "per_class_ap": per_class_by_name(result.per_class_ap, gt.category_names)}, indent=1))
    else:
        print(result.summary())
    return 0
