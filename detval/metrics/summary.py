"""Dataset-level detection metrics from all images' stats (the end of YOLOv5 v7.0 val.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detval.metrics.ap import ClassAP, ap_per_class


@dataclass(frozen=True)
class DetectionMetrics:
    """mp, mr, map50, map: means over classes with labels; maps [nc]: per-class mAP50-95 with the overall value
    where a class has no labels (v7.0's `maps`); nt [nc]: label count per class; per_class: None when no
    detection is a true positive at any threshold (v7.0 then reports zeros)."""

    mp: float
    mr: float
    map50: float
    map: float
    maps: np.ndarray
    nt: np.ndarray
    per_class: ClassAP | None


def detection_metrics(correct: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                      nc: int) -> DetectionMetrics:
    """All images' stats concatenated in dataset order -> metrics.

    correct: bool [N, T]; conf, pred_cls: [N]; target_cls: [M]; nc: number of classes.
    """
    mp = mr = map50 = map_ = 0.0
    per_class = None
    if len(correct) and correct.any():
        per_class = ap_per_class(correct, conf, pred_cls, target_cls)
        ap50, ap = per_class.ap[:, 0], per_class.ap.mean(1)
        mp, mr, map50, map_ = per_class.p.mean(), per_class.r.mean(), ap50.mean(), ap.mean()
    nt = np.bincount(target_cls.astype(int), minlength=nc)
    maps = np.zeros(nc) + map_
    if per_class is not None:
        for i, c in enumerate(per_class.classes):
            maps[c] = per_class.ap[i].mean()
    return DetectionMetrics(float(mp), float(mr), float(map50), float(map_), maps, nt, per_class)
