"""One COCO bbox evaluation by one library, as a user runs it: `python benchmarks/coco_tool.py TOOL GT DT`.

TOOL: pycocotools, faster-coco-eval, hotcoco or ultrafast. Loads both files with the library's own loaders,
evaluates, accumulates, summarizes (its prints go to stderr) and prints {"stats": [12], "per_class": [K]} as
JSON on stdout: per-class AP@[.5:.95] (area all, 100 detections) from the library's precision array, categories
in ascending id, -1 without GT. benchmarks/coco_eval.py times this script, start-up included.
"""
import contextlib
import json
import sys


def _library(tool: str):
    if tool == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval, {}
    if tool == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster
        return COCO, COCOeval_faster, {"print_function": lambda *a, **k: None}
    if tool == "hotcoco":
        from hotcoco import COCO, COCOeval
        return COCO, COCOeval, {}
    if tool == "ultrafast":
        from ultrafast_pycocotools import COCO, COCOeval
        return COCO, COCOeval, {}
    raise SystemExit(f"unknown tool {tool!r}")


def main(tool: str, gt_path: str, dt_path: str) -> None:
    COCO, COCOeval, kwargs = _library(tool)
    with contextlib.redirect_stdout(sys.stderr):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval(gt, dt, "bbox", **kwargs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = []
    try:
        import numpy as np
        precision = np.asarray(ev.eval["precision"])
        for k in range(precision.shape[2]):
            s = precision[:, :, k, 0, -1]
            s = s[s > -1]
            per_class.append(float(np.mean(s)) if s.size else -1.0)
    except (KeyError, TypeError, AttributeError, IndexError):
        per_class = None
    print(json.dumps({"stats": [float(x) for x in ev.stats], "per_class": per_class}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
