"""Average precision per class from matched detections (YOLOv5 v7.0 `ap_per_class`, `compute_ap`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it; same arithmetic


@dataclass(frozen=True)
class ClassAP:
    """ap_per_class's result. K = classes that have labels (ascending id), T = IoU thresholds.

    p, r, f1: [K] at the confidence that maximises the smoothed mean F1; ap: [K, T]; classes: [K] int ids.
    Curves for plots: px [1000] confidences (and recall grid for py), py [K', 1000] precision vs recall at
    IoU 0.5 (only classes with detections), p_curve, r_curve, f1_curve [K, 1000] vs confidence.
    """

    tp: np.ndarray
    fp: np.ndarray
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    ap: np.ndarray
    classes: np.ndarray
    px: np.ndarray
    py: np.ndarray
    p_curve: np.ndarray
    r_curve: np.ndarray
    f1_curve: np.ndarray


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter of width fraction f, edges padded with the end values (v7.0)."""
    nf = round(len(y) * f * 2) // 2 + 1
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP as the area under the monotone precision envelope, sampled at 101 recall points (COCO style).

    recall, precision: [n] curves in descending-confidence order. Returns (ap, mpre, mrec).
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(_trapezoid(np.interp(x, mrec, mpre), x)), mpre, mrec


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16) -> ClassAP:
    """Per-class P, R, F1 and AP from all detections of a dataset.

    tp: bool [N, T] true positive per IoU threshold; conf: [N] scores; pred_cls: [N] predicted class;
    target_cls: [M] class of every ground-truth box. Classes without labels are left out.
    """
    i = np.argsort(-conf)
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]
    unique_classes, nt = np.unique(target_cls, return_counts=True)
    nc = unique_classes.shape[0]
    px, py = np.linspace(0, 1, 1000), []
    ap, p, r = np.zeros((nc, tp.shape[1])), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        n_l = nt[ci]
        n_p = i.sum()
        if n_p == 0 or n_l == 0:
            continue
        fpc = (1 - tp[i]).cumsum(0)
        tpc = tp[i].cumsum(0)
        recall = tpc / (n_l + eps)
        r[ci] = np.interp(-px, -conf[i], recall[:, 0], left=0)  # negative x: np.interp needs increasing xp
        precision = tpc / (tpc + fpc)
        p[ci] = np.interp(-px, -conf[i], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                py.append(np.interp(px, mrec, mpre))
    f1 = 2 * p * r / (p + r + eps)
    best = smooth(f1.mean(0), 0.1).argmax() if nc else 0
    p_best, r_best, f1_best = p[:, best], r[:, best], f1[:, best]
    tp_count = (r_best * nt).round()
    fp_count = (tp_count / (p_best + eps) - tp_count).round()
    return ClassAP(tp=tp_count, fp=fp_count, p=p_best, r=r_best, f1=f1_best, ap=ap,
                   classes=unique_classes.astype(int), px=px,
                   py=np.stack(py) if py else np.zeros((0, 1000)),
                   p_curve=p, r_curve=r, f1_curve=f1)
