"""Box conversions and geometry, with YOLOv5 v7.0's exact float arithmetic.

Boxes are float tensors [N, 4]; `xyxy` is (x1, y1, x2, y2), `xywh` is (cx, cy, w, h).
Operation order and dtypes follow v7.0 on purpose: changing them changes the last bits of the metrics.
"""
from __future__ import annotations

import torch


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """[N, 4] (cx, cy, w, h) -> [N, 4] (x1, y1, x2, y2)."""
    y = x.clone()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x: torch.Tensor) -> torch.Tensor:
    """[N, 4] (x1, y1, x2, y2) -> [N, 4] (cx, cy, w, h)."""
    y = x.clone()
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def clip_boxes_(boxes: torch.Tensor, shape_hw: tuple[int, int]) -> torch.Tensor:
    """Clip xyxy boxes in place to an image of (height, width) pixels."""
    boxes[:, 0].clamp_(0, shape_hw[1])
    boxes[:, 1].clamp_(0, shape_hw[0])
    boxes[:, 2].clamp_(0, shape_hw[1])
    boxes[:, 3].clamp_(0, shape_hw[0])
    return boxes


def scale_boxes_(boxes: torch.Tensor, gain: float, pad: tuple[float, float], orig_hw: tuple[int, int]) -> torch.Tensor:
    """Map xyxy boxes in place from letterboxed-input pixels back to original-image pixels.

    gain: the letterbox's resize ratio (resized height / original height, as v7.0 passes `ratio_pad[0][0]`);
    pad: (dw, dh) letterbox padding in input pixels. The result is clipped to orig_hw (height, width).
    """
    boxes[:, [0, 2]] -= pad[0]
    boxes[:, [1, 3]] -= pad[1]
    boxes[:, :4] /= gain
    return clip_boxes_(boxes, orig_hw)


def box_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of every pair: box1 [N, 4] xyxy, box2 [M, 4] xyxy -> [N, M].

    Not torchvision's box_iou: v7.0 adds eps to the union, which moves the last bits that decide matches at
    exactly 0.5, 0.55, ...
    """
    (a1, a2), (b1, b2) = box1.unsqueeze(1).chunk(2, 2), box2.unsqueeze(0).chunk(2, 2)
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(2)
    return inter / ((a2 - a1).prod(2) + (b2 - b1).prod(2) - inter + eps)
