"""Test-time augmentation (--augment) as YOLOv5 v7.0's DetectionModel._forward_augment computes it.

The batch runs three times: as it is, flipped left-right and shrunk to 0.83, and shrunk to 0.67 (each padded up to
a multiple of the largest stride with 0.447). Each output is mapped back to the input's pixels; the full-size pass
loses its coarsest level's rows (large objects), the smallest pass its finest level's (small objects); the three
are joined along the box axis. Every step is a copy or exact elementwise arithmetic (bilinear interpolation
included: each output pixel is computed on its own), so a forward whose model pass is exact at any thread count
(chunked.py) stays exact with augmentation.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

SCALES = (1.0, 0.83, 0.67)  # v7.0's
FLIPS = (None, 3, None)  # torch dims flipped before scaling: 3 is left-right (2 would be up-down)
PAD_VALUE = 0.447  # v7.0's fill of the padding (roughly the ImageNet mean)


def scaled_size(h: int, w: int, ratio: float, gs: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized (h, w), padded (h, w)) of an h x w image scaled by ratio: truncated, then up to multiples of gs."""
    return (int(h * ratio), int(w * ratio)), (math.ceil(h * ratio / gs) * gs, math.ceil(w * ratio / gs) * gs)


def scale_img(img: torch.Tensor, ratio: float = 1.0, gs: int = 32) -> torch.Tensor:
    """img [B, C, H, W] (float) resized by ratio (bilinear, align_corners=False), then padded right and bottom with
    PAD_VALUE to multiples of gs, as v7.0's utils.torch_utils.scale_img. ratio 1.0: img itself."""
    if ratio == 1.0:
        return img
    b, c, h0, w0 = img.shape
    (h, w), (ph, pw) = scaled_size(h0, w0, ratio, gs)
    # each plane as its own 1-channel image: the same per-pixel arithmetic, but torch's CPU kernel for 3 channels at
    # 1 thread is its channels-last one, whose bits differ from the generic kernel val.py's 2 threads run
    planes = F.interpolate(img.reshape(b * c, 1, h0, w0), size=(h, w), mode="bilinear", align_corners=False)
    return F.pad(planes.view(b, c, h, w), [0, pw - w, 0, ph - h], value=PAD_VALUE)


def descale_pred(p: torch.Tensor, flip: int | None, scale: float, img_hw: tuple[int, int]) -> torch.Tensor:
    """Decoded output [B, N, 5 + nc] of a scaled (and flipped) input -> boxes (cx, cy, w, h) in the pixels of the
    original img_hw input, in place (v7.0's inplace _descale_pred: divide by scale, then mirror the centre)."""
    p[..., :4] /= scale
    if flip == 2:
        p[..., 1] = img_hw[0] - p[..., 1]
    elif flip == 3:
        p[..., 0] = img_hw[1] - p[..., 0]
    return p


def clip_augmented(y: list[torch.Tensor], nl: int) -> list[torch.Tensor]:
    """v7.0's _clip_augmented of the passes' outputs [B, N_k, no]: the first (full-size) pass drops the rows of its
    last level (the largest objects), the last (smallest) pass drops the rows of its first level (the smallest).

    Rows are counted as v7.0 does, from N_k and the level grid ratios 4^l (levels halve each side)."""
    g = sum(4 ** x for x in range(nl))  # grid cells per cell of the coarsest level, summed over levels
    y = list(y)
    y[0] = y[0][:, :-(y[0].shape[1] // g)]
    y[-1] = y[-1][:, (y[-1].shape[1] // g) * 4 ** (nl - 1):]
    return y


def augmented_forward(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, gs: int,
                      nl: int) -> torch.Tensor:
    """forward (a model's eval forward: [B, C, H, W] -> [B, N, 5 + nc]) over the SCALES x FLIPS passes of x,
    mapped back to x's pixels and joined: [B, N', 5 + nc], as v7.0's _forward_augment. gs: the largest stride."""
    img_hw = (x.shape[2], x.shape[3])
    y = []
    for scale, flip in zip(SCALES, FLIPS):
        xi = scale_img(x.flip(flip) if flip else x, scale, gs)
        y.append(descale_pred(forward(xi), flip, scale, img_hw))
    return torch.cat(clip_augmented(y, nl), 1)
