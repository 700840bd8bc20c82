"""YOLOv5 v7.0 detection models built from their model yaml (the `models/yolov5*.yaml` dict)."""
from __future__ import annotations

import math
import re
from copy import deepcopy
from pathlib import Path

import torch
import yaml
from torch import nn

from .augment import augmented_forward
from .chunked import DEFAULT_CHUNK_PIXELS, chunk_sizes, reference_forward, reference_split
from .layers import C3, LAYER_TYPES, SPPF, Bottleneck, Concat, Conv, Detect, SiLU
from .split_sigmoid import ExactSplit

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class UnknownLayerError(ValueError):
    """A model yaml names a layer type (or activation) that detval does not implement."""


def make_divisible(x: float, divisor: int) -> int:
    """The smallest multiple of divisor that is >= x (channel counts after width scaling)."""
    return math.ceil(x / divisor) * divisor


def bundled_config(name: str) -> Path:
    """Path of a shipped v7.0 config: 'yolov5n', 'yolov5n.yaml' ... 'yolov5x'."""
    stem = Path(name).stem
    path = CONFIG_DIR / f"{stem}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no bundled model config {name!r} (shipped: {shipped})")
    return path


def load_model_yaml(cfg: str | Path | dict) -> dict:
    """A model yaml as a dict: from a dict (copied), a yaml file, or a bundled config name."""
    if isinstance(cfg, dict):
        return deepcopy(cfg)
    path = Path(cfg)
    if not path.is_file():
        path = bundled_config(str(cfg))
    with open(path, encoding="ascii", errors="ignore") as f:
        return yaml.safe_load(f)


_ACTIVATION = re.compile(r"^nn\.(SiLU|ReLU|ReLU6|Hardswish|LeakyReLU|Identity)\(\s*([0-9.eE+-]*)\s*\)$")


def parse_activation(spec: str | None) -> bool | nn.Module:
    """The yaml's optional `activation` (e.g. 'nn.LeakyReLU(0.1)') as a module; True means SiLU.

    v7.0 eval()s this string; we accept only the activations spelled as a plain constructor call.
    """
    if not spec:
        return True
    match = _ACTIVATION.match(spec.replace(" ", ""))
    if not match:
        raise UnknownLayerError(f"unsupported activation {spec!r}")
    name, arg = match.groups()
    cls = SiLU if name == "SiLU" else getattr(nn, name)  # ours: exact at any thread count (chunked.py)
    return cls(float(arg)) if arg else cls()


def _resolve_arg(a, d: dict):
    """v7.0 eval()s string args; the only names a P5 yaml uses are 'nc', 'anchors' and literals."""
    if not isinstance(a, str):
        return a
    if a in ("nc", "anchors"):
        return d[a]
    if a == "None":
        return None
    if a in ("True", "False"):
        return a == "True"
    return a  # e.g. 'nearest', left as a string exactly as v7.0's NameError fallback does


def parse_model(d: dict, ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Build the layer list from a v7.0 model dict, as v7.0 `parse_model` does.

    Returns (layers, save): save lists the indices whose outputs later layers read. Each layer gets
    v7.0's bookkeeping attributes i (index), f (from), type (name) and np (parameter count).
    """
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    act = parse_activation(d.get("activation"))
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)

    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m not in LAYER_TYPES:
            raise UnknownLayerError(f"layer {i}: unsupported layer type {m!r} "
                                    f"(detval implements {', '.join(LAYER_TYPES)})")
        module = LAYER_TYPES[m]
        args = [_resolve_arg(a, d) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        kwargs = {}
        if module in (Conv, Bottleneck, C3, SPPF):
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if module is C3:
                args.insert(2, n)
                n = 1
            if act is not True:
                kwargs["act"] = act
        elif module is Concat:
            c2 = sum(ch[x] for x in f)
        elif module is Detect:
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):  # anchor count only: placeholder anchors, as v7.0
                args[1] = [list(range(args[1] * 2))] * len(f)
        else:
            c2 = ch[f]

        layer = nn.Sequential(*(module(*args, **kwargs) for _ in range(n))) if n > 1 else module(*args, **kwargs)
        layer.i, layer.f, layer.type = i, f, m
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(layer)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


def _fix_anchor_order(m: Detect) -> None:
    """Flip the anchor levels when their sizes run against the strides (v7.0 check_anchor_order)."""
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da = a[-1] - a[0]
    ds = m.stride[-1] - m.stride[0]
    if da and (da.sign() != ds.sign()):
        m.anchors[:] = m.anchors.flip(0)


class DetectionModel(nn.Module):
    """A YOLOv5 v7.0 P5 detector.

    forward(x: float Tensor [B, ch, H, W], RGB in 0..1, or uint8 in 0..255; H and W multiples of max(stride))
    in eval mode -> Tensor [B, N, 5 + nc] as `Detect` documents (boxes cx, cy, w, h in input pixels). On the
    CPU in FP32 a batch runs in chunks of images, with the same result bit for bit (chunked.py).

    Attributes: yaml (the model dict), nc, names (list[str], default '0'..'nc-1'), stride (Tensor [nl],
    pixels per cell of each level, a view of the Detect head's buffer), model (the layer Sequential;
    state_dict keys match v7.0: 'model.0.conv.weight', ..., 'model.24.anchors').

    `stride` given: trusted (e.g. from a checkpoint); otherwise measured as v7.0 does, by a forward of a
    256 x 256 zero image. The yaml's anchors are in pixels and are stored divided by the stride.
    """

    def __init__(self, cfg: dict | str | Path, ch: int = 3, nc: int | None = None, anchors: int | None = None,
                 *, stride: torch.Tensor | list[float] | None = None):
        super().__init__()
        self.yaml = load_model_yaml(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        if anchors:
            self.yaml["anchors"] = round(anchors)
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch])
        self.nc: int = self.yaml["nc"]
        self.names: list[str] = [str(i) for i in range(self.nc)]
        # CPU FP32 eval runs a batch in chunks of about this many pixels, bit-identical to the whole batch and
        # faster (chunked.py); None runs every batch whole
        self.chunk_pixels: int | None = DEFAULT_CHUNK_PIXELS
        self.channels_last = False  # opt-in, not exact: see use_channels_last()

        m = self.detect
        if stride is None:
            stride = self._measure_stride(ch)
        m.stride = torch.as_tensor(stride, dtype=torch.float32).clone()
        _fix_anchor_order(m)
        with torch.no_grad():
            m.anchors /= m.stride.view(-1, 1, 1)

    def _measure_stride(self, ch: int, s: int = 256) -> list[float]:
        """Input pixels per output cell of each level, from the map sizes of an s x s zero image.

        Only the head is put in training mode (it then returns its raw maps): the BatchNorm running
        statistics stay untouched.
        """
        was_training = self.training
        self.eval()
        self.detect.train()
        with torch.no_grad():
            maps = self.forward(torch.zeros(1, ch, s, s))
        self.train(was_training)
        return [s / x.shape[-2] for x in maps]

    @property
    def detect(self) -> Detect:
        """The detection head (always the last layer)."""
        m = self.model[-1]
        if not isinstance(m, Detect):
            raise UnknownLayerError(f"the last layer is {type(m).__name__}, not Detect")
        return m

    @property
    def stride(self) -> torch.Tensor:
        return self.detect.stride

    def forward(self, x: torch.Tensor, augment: bool = False):
        """augment: test-time augmentation (--augment), as v7.0's _forward_augment (augment.py)."""
        if augment:
            return augmented_forward(self.forward, self.as_input(x), int(self.stride.max()), self.detect.nl)
        plan = self.chunk_plan(x)
        if plan is not None:
            return reference_forward(self, x, *plan)
        return self.detect(self.features(self.as_input(x)))

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (0..255) -> the model's float dtype in 0..1, as val.py divides them (x.float() / 255);
        float input unchanged. Given uint8, a chunked forward converts chunk by chunk (no full-batch float copy)."""
        return x.to(self.detect.anchors.dtype) / 255 if x.dtype == torch.uint8 else x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Input [B, ch, H, W] -> the Detect head's inputs (one map per level), every layer but the last."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y: list[torch.Tensor | None] = []
        for m in self.model[:-1]:
            if m.f != -1:  # input from earlier layers, not just the previous one
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        f = self.detect.f
        return [x if j == -1 else y[j] for j in ([f] if isinstance(f, int) else f)]

    def chunk_plan(self, x: torch.Tensor) -> tuple[list[int], ExactSplit] | None:
        """(images per chunk, split) for a forward of x with the reference's bits at this thread count, or None to
        run torch's plain forward (not CPU float32 eval, or the reference cannot be reproduced: see chunked.py)."""
        dtype = self.detect.anchors.dtype if x.dtype == torch.uint8 else x.dtype
        if self.training or self.detect.training or x.device.type != "cpu" or dtype != torch.float32 or x.dim() != 4:
            return None
        split = reference_split(self, torch.get_num_threads())
        if split is None:
            return None
        return chunk_sizes(x.shape[0], x.shape[2], x.shape[3], self.chunk_pixels), split

    def use_channels_last(self) -> "DetectionModel":
        """Run convolutions in NHWC (channels_last), in place. Opt-in only, NOT exact: oneDNN then sums in another
        order. Measured on a 2-core AVX-512 CPU, yolov5n, coco128 at 640: inference 38 -> 30 ms/image; outputs move
        by up to 2e-3 px; P and R move by 5e-8 and 2e-8, mAP50 and mAP50-95 unchanged."""
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def fuse(self) -> "DetectionModel":
        """Fold every Conv's BatchNorm into its convolution, in place, as v7.0 val.py runs the model."""
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    @property
    def is_fused(self) -> bool:
        return not any(isinstance(m, Conv) and m.bn is not None for m in self.modules())
