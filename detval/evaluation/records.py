"""The typed records evaluators take and give: one batch's images, and many images' results laid out flat."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageBatch:
    """Some images of one rank, in original-image pixels.

    image_ids: plan-order indices; dets[k]: float32 [N, 6] (x1, y1, x2, y2, conf, cls) of image k (cls already 0
    with --single-cls); labels[k]: float32 [M, 5] (cls, x1, y1, x2, y2)."""

    image_ids: list[int]
    dets: list[Tensor]
    labels: list[Tensor]


@dataclass(frozen=True)
class Detections:
    """Detections of many images, flat: boxes float32 [D, 4] xyxy original-image pixels; conf, cls float32 [D]."""

    boxes: Tensor
    conf: Tensor
    cls: Tensor

    def rows(self) -> dict[str, Tensor]:
        return {"boxes": self.boxes, "conf": self.conf, "cls": self.cls}

    @classmethod
    def from_rows(cls, rows: dict[str, Tensor]) -> "Detections":
        return cls(rows["boxes"], rows["conf"], rows["cls"])

    def slice(self, a: int, b: int) -> "Detections":
        return Detections(self.boxes[a:b], self.conf[a:b], self.cls[a:b])


@dataclass(frozen=True)
class ImageResults:
    """Per-image results of many images, flat: image i owns det_counts[i] detection rows and label_counts[i] labels.

    image_ids: int64 [n] plan-order indices (ascending once gathered); det: Detections [D]; correct: bool [D, 10]
    (true positive at each IoU threshold 0.5:0.95); label_cls: float32 [L]."""

    image_ids: Tensor
    det_counts: Tensor
    det: Detections
    correct: Tensor
    label_counts: Tensor
    label_cls: Tensor

    def det_offsets(self) -> list[int]:
        """Row offsets: image k's detections are det rows [offsets[k], offsets[k + 1])."""
        return [0] + torch.cumsum(self.det_counts, 0).tolist()


def cat_rows(parts: list[Tensor], empty_shape: tuple, dtype: torch.dtype) -> Tensor:
    """torch.cat of row blocks, or an empty [0, ...] tensor when there are none."""
    return torch.cat(parts, 0) if parts else torch.zeros(empty_shape, dtype=dtype)
