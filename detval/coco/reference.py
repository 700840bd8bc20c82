"""The same COCO evaluation run by pycocotools, faster-coco-eval or ultrafast-pycocotools, as a CocoResult (for parity checks and for
`--backend`). Both are optional dependencies, imported on use; their progress prints are swallowed."""
from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from detval.coco.evaluate import CocoAccumulated, CocoParams, CocoResult, per_class_ap

BACKENDS = ("pycocotools", "faster-coco-eval", "ultrafast")


def _load(source, what: str):
    """A private copy: both libraries write into the dicts they are given (ids, areas, ignore flags)."""
    if isinstance(source, (str, Path)):
        with open(source) as f:
            return json.load(f)
    if isinstance(source, Mapping):
        out = dict(source)
        out["annotations"] = [dict(a) for a in source.get("annotations", [])]
        return out
    if isinstance(source, Sequence):
        return [dict(d) for d in source]
    raise TypeError(f"{what}: expected a path, a dict or a list, got {type(source).__name__}")


def _library_gt(backend: str, gt_data) -> tuple:
    """(the library's COCO of gt_data, its COCOeval class, COCOeval's extra keyword arguments)."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        return gt, COCOeval, {}
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster
        return COCO(gt_data), COCOeval_faster, {"print_function": lambda *a, **k: None}
    if backend == "ultrafast":
        from ultrafast_pycocotools import COCO
        from ultrafast_pycocotools import COCOeval
        return COCO(gt_data), COCOeval, {}
    raise ValueError(f"unknown COCO backend {backend!r}; choose from {BACKENDS}")


def reference_evaluate(backend: str, gt_source, dets_source, img_ids=None, cat_ids=None,
                       timings: dict | None = None) -> CocoResult:
    """COCOeval(gt, gt.loadRes(dets), 'bbox') with params.imgIds / catIds from img_ids / cat_ids when given.

    gt_source: instances path or dict; dets_source: results path or list. -> CocoResult with the library's
    stats, per-class AP computed from its precision array, and its precision/recall/scores.
    timings, if given, receives "load" and "evaluate" (evaluate + accumulate + summarize) in seconds."""
    t_load = time.perf_counter()
    if backend == "ultrafast":   # its own loaders read files in Rust, and copy what they are given
        gt_data, dets_data = (str(s) if isinstance(s, Path) else s for s in (gt_source, dets_source))
    else:
        gt_data, dets_data = _load(gt_source, "ground truth"), _load(dets_source, "detections")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt, Eval, kwargs = _library_gt(backend, gt_data)
        dt = gt.loadRes(dets_data)
        t_eval = time.perf_counter()
        ev = Eval(gt, dt, "bbox", **kwargs)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if timings is not None:
        timings["load"] = t_eval - t_load
        timings["evaluate"] = time.perf_counter() - t_eval
    p = ev.params
    params = CocoParams(cat_ids=np.asarray(p.catIds, dtype=np.int64), iou_thrs=np.asarray(p.iouThrs),
                        rec_thrs=np.asarray(p.recThrs), area_rngs=np.asarray(p.areaRng, np.float64),
                        area_labels=tuple(p.areaRngLbl), max_dets=tuple(p.maxDets))
    acc = CocoAccumulated(params, np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"]),
                          np.asarray(ev.eval["scores"]))
    return CocoResult(stats=np.asarray(ev.stats, dtype=np.float64), per_class_ap=per_class_ap(acc),
                      accumulated=acc)

