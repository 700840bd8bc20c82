"""Detection confusion matrix (YOLOv5 v7.0 `ConfusionMatrix`): rows predicted class, columns true class, last = background."""
from __future__ import annotations

import numpy as np
import torch

from detval.ops.boxes import box_iou


def confusion_update(matrix: np.ndarray, detections: torch.Tensor | None, labels: torch.Tensor,
                     conf: float = 0.25, iou_thres: float = 0.45) -> None:
    """Add one image to matrix [nc + 1, nc + 1] in place.

    detections: [N, 6] (x1, y1, x2, y2, conf, cls) or None when the image has none; labels: [M, 5]
    (cls, x1, y1, x2, y2), or [M] classes when detections is None. Same pixel space for both.
    """
    nc = matrix.shape[0] - 1
    if detections is None:
        for gc in labels.int():
            matrix[nc, gc] += 1  # missed: true background
        return
    detections = detections[detections[:, 4] > conf]
    gt_classes = labels[:, 0].int()
    detection_classes = detections[:, 5].int()
    iou = box_iou(labels[:, 1:], detections[:, :4])
    x = torch.where(iou > iou_thres)
    if x[0].shape[0]:
        matches = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1).cpu().numpy()
        if x[0].shape[0] > 1:
            matches = matches[matches[:, 2].argsort()[::-1]]
            matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
            matches = matches[matches[:, 2].argsort()[::-1]]
            matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
    else:
        matches = np.zeros((0, 3))
    n = matches.shape[0] > 0
    m0, m1, _ = matches.transpose().astype(int)
    for i, gc in enumerate(gt_classes):
        j = m0 == i
        if n and sum(j) == 1:
            matrix[detection_classes[m1[j]], gc] += 1  # correct or confused class
        else:
            matrix[nc, gc] += 1  # missed
    if n:
        for i, dc in enumerate(detection_classes):
            if not any(m1 == i):
                matrix[dc, nc] += 1  # false alarm: predicted background
