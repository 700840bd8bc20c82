"""The building blocks of YOLOv5 v7.0 P5 detectors, numerically identical to the reference.

Attribute names (`conv`, `bn`, `cv1`, `m`, `anchors`, ...) follow YOLOv5 v7.0 so that a v7.0 state_dict
loads key for key. Every forward is written with the same torch operations, in the same order, as v7.0:
the reference outputs are compared bit for bit, and a reordered sum or a fused multiply-add would not be.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
from torch import nn

from .split_sigmoid import ExactSplit, op_of_slice


@dataclass(frozen=True)
class BatchSlice:
    """Images [first, first + n) of a batch of `batch` images, run as the reference runs the whole batch: `split`
    says how the reference's and this call's elementwise ops are split (split_sigmoid.py)."""

    first: int
    batch: int
    split: ExactSplit


_REFERENCE = contextvars.ContextVar("detval_reference_kernels", default=None)


@contextlib.contextmanager
def reference_kernels(part: BatchSlice):
    """Within it, the layers below compute on CPU float32 inputs the bits the reference (val.py's torch at
    REFERENCE_THREADS threads, the whole batch at once) computes for these images, whatever the thread count:
    - every `Conv2d` runs oneDNN's convolution. torch picks oneDNN itself for a batch of 2+ images on 2+ threads,
      but its own kernel for a 1x1 filter on one thread below 16 images, and for small inputs of a single image;
      that kernel rounds differently, and its sums depend on the thread count. oneDNN's do not, nor on the batch
      size (checked per model: chunked.reference_split);
    - `SiLU` and the head's sigmoid redo the elements whose SIMD / scalar path differs from the reference call's."""
    token = _REFERENCE.set(part)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def _as_reference(x: torch.Tensor) -> BatchSlice | None:
    """The active BatchSlice when x [n, ...] is one that reference_kernels applies to, else None."""
    part = _REFERENCE.get()
    if part is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    return part


def elementwise(op, x: torch.Tensor) -> torch.Tensor:
    """op(x) (an op of split_sigmoid.OPS) with the reference's bits under reference_kernels, else plain op(x)."""
    part = _as_reference(x)
    if part is None or not x.is_contiguous():  # channels_last: not exact anyway (DetectionModel.use_channels_last)
        return op(x)
    per_image = x[0].numel()
    return op_of_slice(op, x, part.first * per_image, part.batch * per_image, part.split)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state_dict keys) that honours `reference_kernels`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _as_reference(x) is not None:
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                            self.groups)
        return super().forward(x)


class SiLU(nn.SiLU):
    """nn.SiLU that honours `reference_kernels`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elementwise(nn.functional.silu, x)


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """Padding that keeps the spatial size ('same') for a square kernel k, dilation d, at stride 1."""
    if d > 1:
        k = d * (k - 1) + 1
    return k // 2 if p is None else p


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an eval-mode BatchNorm2d into the preceding Conv2d, returning a new Conv2d with bias.

    The arithmetic (a diagonal matrix product, the BN scale computed twice with eps added on either side)
    is v7.0's `fuse_conv_and_bn`: the reference ran fused, and a mathematically equal fold rounds
    differently in the last bit.
    """
    fused = Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                      bias=True).requires_grad_(False).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        w_conv = conv.weight.clone().view(conv.out_channels, -1)
        w_bn = torch.diag(bn.weight.div(torch.sqrt(bn.eps + bn.running_var)))
        fused.weight.copy_(torch.mm(w_bn, w_conv).view(fused.weight.shape))
        b_conv = (torch.zeros(conv.weight.size(0), device=conv.weight.device, dtype=conv.weight.dtype)
                  if conv.bias is None else conv.bias)
        b_bn = bn.bias - bn.weight.mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
        fused.bias.copy_(torch.mm(w_bn, b_conv.reshape(-1, 1)).reshape(-1) + b_bn)
    return fused


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; after `fuse()`, Conv2d (with bias) -> activation."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        # eps and momentum as YOLOv5's initialize_weights() sets them; checkpoints carry the same values.
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        if act is True:
            self.act = SiLU()
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (idempotent)."""
        if self.bn is not None:
            self.conv = fuse_conv_and_bn(self.conv, self.bn)
            self.bn = None


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, with a residual add when `shortcut` and the channel counts agree."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5, act=True):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c_, c2, 3, 1, g=g, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    """CSP bottleneck with three convolutions: cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, act=True):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, 1, act=act)
        self.cv3 = Conv(2 * c_, c2, 1, act=act)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0, act=act) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools, concatenated with their input."""

    def __init__(self, c1: int, c2: int, k: int = 5, act=True):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c_ * 4, c2, 1, 1, act=act)
        self.m = SameMaxPool2d(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class SameMaxPool2d(nn.MaxPool2d):
    """k x k max-pool at stride 1 with 'same' padding (SPPF's), as two separable 1-D running maxima.

    Max is exact, so this equals nn.MaxPool2d bit for bit (padding counts as -inf in both); torch's CPU
    max_pool2d also computes the argmax indices and takes ~18x longer on SPPF's small maps.
    """

    def __init__(self, k: int):
        super().__init__(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.kernel_size, self.padding
        x = nn.functional.pad(x, (p, p, p, p), value=float("-inf"))
        for dim in (3, 2):
            n = x.shape[dim] - (k - 1)
            y = x.narrow(dim, 0, n)
            for j in range(1, k):
                y = torch.maximum(y, x.narrow(dim, j, n))
            x = y
        return x


class Concat(nn.Module):
    """Concatenate a list of tensors along `dimension`."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """YOLOv5 anchor-based detection head over nl feature levels (P3, P4, P5).

    Buffers: `anchors` [nl, na, 2] (w, h) in stride units (persistent, as in v7.0 state_dicts) and
    `stride` [nl] in input pixels (non-persistent: v7.0 keeps it outside the state_dict). Both follow the
    module across `.to(device)` / `.half()`; the decode grids are rebuilt at every call from them, so
    they always have the module's device and dtype (v7.0 takes the grid dtype from `anchors` too).

    Eval forward: list of nl maps [B, C_l, H_l, W_l] -> Tensor [B, N, 5 + nc], N = sum(na * H_l * W_l),
    rows (cx, cy, w, h) in input pixels, objectness, nc class scores (all after sigmoid), ordered level by
    level, then anchor, then row y, then column x. Training forward: the raw maps [B, na, H_l, W_l, 5 + nc].
    """

    def __init__(self, nc: int = 80, anchors=(), ch: tuple[int, ...] = ()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(Conv2d(x, self.no * self.na, 1) for x in ch)

    def forward(self, x: list[torch.Tensor]):
        maps = self.raw_maps(x)
        if self.training:
            return maps
        return torch.cat([self.decode(i, p).view(p.shape[0], -1, self.no) for i, p in enumerate(maps)], 1)

    def raw_maps(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        """nl feature maps [B, C_l, H_l, W_l] -> nl head outputs [B, na, H_l, W_l, no], contiguous, before sigmoid."""
        out = []
        for i in range(self.nl):
            p = self.m[i](x[i])
            bs, _, ny, nx = p.shape
            out.append(p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out

    def decode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        """Level i's head output [B, na, ny, nx, no] -> [B, na, ny, nx, no]: boxes (cx, cy, w, h) in input pixels,
        objectness and class scores after sigmoid (the reference's bits under reference_kernels)."""
        _, _, ny, nx, _ = p.shape
        grid, anchor_grid = self._make_grid(nx, ny, i)
        xy, wh, conf = elementwise(torch.sigmoid, p).split((2, 2, self.nc + 1), 4)
        xy = (xy * 2 + grid) * self.stride[i]
        wh = (wh * 2) ** 2 * anchor_grid
        return torch.cat((xy, wh, conf), 4)

    def _make_grid(self, nx: int, ny: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets [1, na, ny, nx, 2] (x, y) minus 0.5, and anchor sizes [1, na, ny, nx, 2] in pixels."""
        d, t = self.anchors.device, self.anchors.dtype
        shape = 1, self.na, ny, nx, 2
        y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid


#: Layer types a model yaml may name, as YOLOv5 v7.0 spells them.
LAYER_TYPES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "Bottleneck": Bottleneck,
    "C3": C3,
    "SPPF": SPPF,
    "Concat": Concat,
    "Detect": Detect,
    "nn.Upsample": nn.Upsample,
}
