"""One image's contribution to the metrics (v7.0 val.py's inner loop): its detections and labels in original-image
pixels, then matched."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from detval.metrics.confusion import confusion_update
from detval.metrics.matching import IOU_THRESHOLDS, match_detections
from detval.ops.boxes import scale_boxes_, xywh2xyxy


@dataclass(frozen=True)
class ImageStats:
    """Per-image results. N detections, M labels, T IoU thresholds.

    boxes: float32 [N, 4] xyxy in original-image pixels; conf, cls: float32 [N]; correct: bool [N, T];
    target_cls: float32 [M].
    """

    boxes: torch.Tensor
    conf: torch.Tensor
    cls: torch.Tensor
    correct: torch.Tensor
    target_cls: torch.Tensor


def native_pixels(pred: torch.Tensor, labels: torch.Tensor, orig_hw: tuple[int, int],
                  ratio_pad: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's NMS output and labels from the letterboxed input to the original image, as val.py scales them.

    pred: [N, 6] (x1, y1, x2, y2, conf, cls) input pixels; labels: [M, 5] (cls, cx, cy, w, h) input pixels;
    ratio_pad: ((gain_h, gain_w), (pad_w, pad_h)) as the dataset reports it.
    -> (predn [N, 6] as pred, labelsn [M, 5] (cls, x1, y1, x2, y2)), both in original-image pixels.
    """
    gain, pad = ratio_pad[0][0], ratio_pad[1]
    predn = pred.clone()
    if len(pred):
        scale_boxes_(predn[:, :4], gain, pad, orig_hw)
    tbox = xywh2xyxy(labels[:, 1:5])
    if len(labels):
        scale_boxes_(tbox, gain, pad, orig_hw)
    return predn, torch.cat((labels[:, 0:1], tbox), 1)


def image_stats(predn: torch.Tensor, labelsn: torch.Tensor, confusion: np.ndarray | None = None) -> ImageStats:
    """Match one image's detections to its labels, both in original-image pixels (see native_pixels).

    The confusion matrix, if given, is updated in place exactly where v7.0 updates it.
    """
    n_pred, n_labels = predn.shape[0], labelsn.shape[0]
    correct = torch.zeros(n_pred, len(IOU_THRESHOLDS), dtype=torch.bool)
    if n_pred == 0:
        if n_labels and confusion is not None:
            confusion_update(confusion, None, labelsn[:, 0])
        empty = torch.zeros((0,), dtype=torch.float32)
        return ImageStats(torch.zeros((0, 4)), empty, empty, correct, labelsn[:, 0].cpu())
    if n_labels:
        correct = match_detections(predn, labelsn, IOU_THRESHOLDS.to(predn.device)).cpu()
        if confusion is not None:
            confusion_update(confusion, predn, labelsn)
    predn = predn.cpu()
    return ImageStats(predn[:, :4], predn[:, 4], predn[:, 5], correct, labelsn[:, 0].cpu())
