"""The batch plan: which images form each batch and at what input shape (YOLOv5 v7.0 rect batches).

The plan is global and fixed by the single-device settings (images, --batch-size, --imgsz): the distributed engine
hands whole batches of it to ranks, so every rank sees exactly the tensors a single device would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchPlan:
    """order: [N] permutation of the scanned images into plan order; batch_of: [N] batch id of each image in plan
    order; batch_shapes: [nb, 2] (height, width) input size of each batch, multiples of the stride."""

    order: np.ndarray
    batch_of: np.ndarray
    batch_shapes: np.ndarray

    @property
    def n_batches(self) -> int:
        return len(self.batch_shapes)

    def batch(self, b: int) -> list[int]:
        """Plan-order image indices of batch b."""
        return np.flatnonzero(self.batch_of == b).tolist()

    def batches(self) -> list[np.ndarray]:
        """Plan-order image indices of every batch, batch id order."""
        return [np.flatnonzero(self.batch_of == b) for b in range(self.n_batches)]

    def shape_of(self, i: int) -> tuple[int, int]:
        """(height, width) input size of plan-order image i."""
        h, w = self.batch_shapes[self.batch_of[i]]
        return int(h), int(w)


def rect_batch_plan(shapes_hw: np.ndarray, batch_size: int, img_size: int, stride: int, pad: float = 0.5) -> BatchPlan:
    """Sort images by aspect ratio and give each batch the smallest stride-multiple shape that fits it (v7.0).

    shapes_hw: int [N, 2] original (height, width); batch_size: images per batch (the single-device one, also when
    distributed); img_size, stride: pixels. Batch b's shape is ceil(r * img_size / stride + pad) * stride per side,
    with r = [max h/w, 1] for a landscape batch, [1, 1 / min h/w] for a portrait one, [1, 1] for a mixed one.
    The sort is numpy's default (unstable) argsort of h / w in float64, exactly v7.0's call: images with equal aspect
    ratios fall as that sort leaves them, which can move them across a batch boundary (other shape) and decides the
    image order, so the numpy version matters (see pyproject.toml).
    """
    s = np.asarray(shapes_hw, dtype=np.float64)[:, ::-1]  # v7.0 keeps (w, h) as float64
    n = len(s)
    bi = np.floor(np.arange(n) / batch_size).astype(int)
    nb = bi[-1] + 1
    ar = s[:, 1] / s[:, 0]  # h / w
    irect = ar.argsort()
    ar = ar[irect]
    shapes = [[1, 1]] * nb
    for i in range(nb):
        ari = ar[bi == i]
        mini, maxi = ari.min(), ari.max()
        if maxi < 1:
            shapes[i] = [maxi, 1]
        elif mini > 1:
            shapes[i] = [1, 1 / mini]
    batch_shapes = np.ceil(np.array(shapes) * img_size / stride + pad).astype(int) * stride
    return BatchPlan(irect, bi, batch_shapes)


def square_batch_plan(n: int, batch_size: int, img_size: int) -> BatchPlan:
    """Dataset order, every batch img_size x img_size (val.py --task speed: rect off, pad 0)."""
    bi = np.floor(np.arange(n) / batch_size).astype(int)
    return BatchPlan(np.arange(n), bi, np.full((bi[-1] + 1, 2), img_size, dtype=int))
