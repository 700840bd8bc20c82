"""Batches of letterboxed images and their labels, as YOLOv5 v7.0's LoadImagesAndLabels + collate_fn give val.py."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from detval.data.letterbox import letterbox, load_image
from detval.data.plan import BatchPlan


@dataclass(frozen=True)
class Batch:
    """images: uint8 [B, 3, H, W] RGB; targets: float32 [M, 6] (image index in batch, cls, cx, cy, w, h) normalized
    to the letterboxed input; shapes: per image ((h0, w0), ((h / h0, w / w0), (pad_w, pad_h))); indices: plan-order
    image indices."""

    images: torch.Tensor
    targets: torch.Tensor
    paths: list[str]
    shapes: list[tuple]
    indices: list[int]


def xywhn2xyxy(x: np.ndarray, w: float, h: float, padw: float, padh: float) -> np.ndarray:
    """Normalized (cx, cy, w, h) [n, 4] -> pixel (x1, y1, x2, y2), in x's dtype (v7.0 arithmetic)."""
    y = np.copy(x)
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def xyxy2xywhn(x: np.ndarray, w: int, h: int, eps: float) -> np.ndarray:
    """Pixel (x1, y1, x2, y2) [n, 4] -> normalized (cx, cy, w, h), clipped to (w - eps, h - eps) first (v7.0)."""
    x = x.copy()
    x[:, [0, 2]] = x[:, [0, 2]].clip(0, w - eps)
    x[:, [1, 3]] = x[:, [1, 3]].clip(0, h - eps)
    y = np.copy(x)
    y[:, 0] = ((x[:, 0] + x[:, 2]) / 2) / w
    y[:, 1] = ((x[:, 1] + x[:, 3]) / 2) / h
    y[:, 2] = (x[:, 2] - x[:, 0]) / w
    y[:, 3] = (x[:, 3] - x[:, 1]) / h
    return y


class ValDataset(torch.utils.data.Dataset):
    """records: ImageRecords in plan order; item i is letterboxed to its batch's shape. times (a timing hook, for
    `detval bench` with no loader workers): anything with add(stage, seconds), told of decode and letterbox (or
    'load (cache)') and preprocess."""

    def __init__(self, records: list, plan: BatchPlan, img_size: int, image_cache=None, times=None) -> None:
        self.records, self.plan, self.img_size = records, plan, img_size
        self.image_cache = image_cache
        self.times = times

    def __len__(self) -> int:
        return len(self.records)

    def load_letterboxed(self, i: int) -> tuple:
        """-> (BGR uint8 image at its batch's shape, (h0, w0), ((h / h0, w / w0), (dw, dh)), letterbox ratio
        (rw, rh), (h, w) after load_image)."""
        rec = self.records[i]
        t0 = time.perf_counter()
        img, (h0, w0), (h, w) = load_image(rec.path, self.img_size, report=not rec.decode_reported)
        t1 = time.perf_counter()
        shape = tuple(int(v) for v in self.plan.batch_shapes[self.plan.batch_of[i]])
        img, ratio, pad = letterbox(img, shape, scaleup=False)
        if self.times is not None and self.image_cache is None:
            self.times.add("decode", t1 - t0)
            self.times.add("letterbox", time.perf_counter() - t1)
        return img, (h0, w0), ((h / h0, w / w0), pad), ratio, (h, w)

    def __getitem__(self, i: int) -> tuple:
        """-> (image uint8 [3, H, W] RGB, labels float32 [n, 6] (0, cls, cx, cy, w, h) normalized to the letterboxed
        image, path str, ((h0, w0), ((h / h0, w / w0), (dw, dh))), i), the item v7.0's __getitem__ gives, plus i."""
        t0 = time.perf_counter()
        if self.image_cache is not None:
            img, orig, ratio_pad, ratio, hw = self.image_cache.get(self, i)
            if self.times is not None:
                self.times.add("load (cache)", time.perf_counter() - t0)
        else:
            img, orig, ratio_pad, ratio, hw = self.load_letterboxed(i)
        t1 = time.perf_counter()
        (h, w), pad = hw, ratio_pad[1]
        labels = self.records[i].labels.copy()
        if labels.size:
            # python floats on purpose: numpy 2 would otherwise compute float32 labels in float64 (NEP 50),
            # unlike the numpy 1.x that YOLOv5 v7.0 ran on
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], float(ratio[0]) * w, float(ratio[1]) * h,
                                       float(pad[0]), float(pad[1]))
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], img.shape[1], img.shape[0], eps=1e-3)
        labels_out = torch.zeros((len(labels), 6))
        if len(labels):
            labels_out[:, 1:] = torch.from_numpy(labels)
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB
        if self.times is not None:
            self.times.add("preprocess", time.perf_counter() - t1)
        return torch.from_numpy(img), labels_out, str(self.records[i].path), (orig, ratio_pad), i


def collate(samples: list) -> Batch:
    """ValDataset items -> Batch; column 0 of the targets becomes the image's index in the batch (v7.0 collate_fn)."""
    images, labels, paths, shapes, indices = zip(*samples)
    for k, lb in enumerate(labels):
        lb[:, 0] = k
    return Batch(torch.stack(images, 0), torch.cat(labels, 0), list(paths), list(shapes), list(indices))


def batch_indices(plan: BatchPlan, batch_ids) -> list[list[int]]:
    """Plan-order image indices of each given batch."""
    return [plan.batch(b) for b in batch_ids]
