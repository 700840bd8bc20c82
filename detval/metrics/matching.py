"""Per-image matching of detections to ground truth at several IoU thresholds (YOLOv5 v7.0 `process_batch`)."""
from __future__ import annotations

import numpy as np
import torch

from detval.ops.boxes import box_iou

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # mAP@0.5:0.95, exactly as v7.0 builds it


def match_detections(detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor = IOU_THRESHOLDS) -> torch.Tensor:
    """Which detections are true positives at each IoU threshold.

    detections: [N, 6] (x1, y1, x2, y2, conf, cls); labels: [M, 5] (cls, x1, y1, x2, y2), same pixel space.
    Returns bool [N, T]. Greedy by IoU: each label and each detection is used at most once per threshold, and
    ties fall the way v7.0's numpy sorts make them fall.
    """
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    iou = box_iou(labels[:, 1:], detections[:, :4])
    correct_class = labels[:, 0:1] == detections[:, 5]
    for i in range(len(iouv)):
        x = torch.where((iou >= iouv[i]) & correct_class)
        if x[0].shape[0]:
            matches = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1).cpu().numpy()
            if x[0].shape[0] > 1:
                matches = matches[matches[:, 2].argsort()[::-1]]
                matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
                matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
            correct[matches[:, 1].astype(int), i] = True
    return torch.tensor(correct, dtype=torch.bool, device=iouv.device)
