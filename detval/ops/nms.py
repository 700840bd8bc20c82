"""Non-maximum suppression over decoded YOLOv5 outputs, as v7.0 val.py runs it, minus its time limit.

Split in two steps so that the raw-output cache can store the first one:
`nms_candidates` (threshold + multi-label expansion) and `nms_select` (sort, per-class NMS, max_det).
Candidates at a threshold c' > c are exactly the rows of the candidates at c whose conf exceeds c', in the same
order (conf = obj * cls <= obj, so the objectness pre-filter never removes a row the product keeps), so
`nms_select(filter(cands_c, c'))` is bit-identical to a fresh run at c'.
"""
from __future__ import annotations

from dataclasses import dataclass

import functools
import importlib.util
from pathlib import Path

import torch

from detval.ops.boxes import xywh2xyxy

MAX_WH = 7680  # class offset in pixels for batched (per-class) NMS, as v7.0


@functools.lru_cache(maxsize=1)
def _nms_kernel():
    """torchvision's NMS kernel, the one torchvision.ops.nms calls (same op, same digits).

    `import torchvision` costs ~1.1 s here (its models and ops pull in torch._dynamo), three times the work
    of a `detval eval`; loading only its compiled ops library takes 1 ms. Falls back to the import when the
    library is not where this torchvision keeps it.
    """
    if not hasattr(torch.ops.torchvision, "nms"):
        spec = importlib.util.find_spec("torchvision")
        libs = sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so")) if spec is not None else []
        try:
            torch.ops.load_library(str(libs[0]))
        except (IndexError, OSError):
            import torchvision  # noqa: F401 -- registers its ops on import
    return torch.ops.torchvision.nms


@dataclass(frozen=True)
class NmsConfig:
    """val.py's NMS settings. `agnostic` is what --single-cls turns on."""

    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    max_nms: int = 30000
    multi_label: bool = True
    agnostic: bool = False


def nms_candidates(prediction: torch.Tensor, conf_thres: float, multi_label: bool = True) -> list[torch.Tensor]:
    """Decoded output [B, N, 5 + nc] (cx, cy, w, h, obj, class scores) -> per image [K, 6] (x1, y1, x2, y2, conf, cls).

    One row per (box, class) whose obj * cls_score exceeds conf_thres (multi-label), or per box with its best
    class. Input pixels; the input is not modified.
    """
    nc = prediction.shape[2] - 5
    multi_label = multi_label and nc > 1
    keep_obj = prediction[..., 4] > conf_thres
    output = []
    for xi, x in enumerate(prediction):
        x = x[keep_obj[xi]]  # boolean indexing copies, so the in-place product below leaves `prediction` alone
        if not x.shape[0]:
            output.append(torch.zeros((0, 6), device=prediction.device))
            continue
        x[:, 5:] *= x[:, 4:5]  # conf = obj_conf * cls_conf
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = (x[:, 5:] > conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], x[i, 5 + j, None], j[:, None].float()), 1)
        else:
            conf, j = x[:, 5:].max(1, keepdim=True)
            x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        output.append(x)
    return output


def with_label_rows(cands: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """--save-hybrid: one image's candidates [K, 6] (x1, y1, x2, y2, conf, cls) followed by one row per label
    (its box, conf 1.0, its class), as v7.0's non_max_suppression(labels=...) adds them (after the model's rows,
    in label order). labels: [M, 5] (cls, cx, cy, w, h) in input pixels. Labels are float32 (val.py's are too, so
    FP16 candidates come out float32)."""
    if not labels.shape[0]:
        return cands
    rows = torch.cat((xywh2xyxy(labels[:, 1:5]), torch.ones_like(labels[:, :1]), labels[:, :1]), 1)
    return torch.cat((cands, rows.to(cands.device)), 0)


def nms_select(x: torch.Tensor, cfg: NmsConfig) -> torch.Tensor:
    """One image's candidates [K, 6] -> its detections [<= max_det, 6], highest confidence first."""
    if not x.shape[0]:
        return x
    x = x[x[:, 4].argsort(descending=True)[: cfg.max_nms]]
    offsets = x[:, 5:6] * (0 if cfg.agnostic else MAX_WH)
    keep = _nms_kernel()(x[:, :4] + offsets, x[:, 4], cfg.iou_thres)[: cfg.max_det]
    return x[keep]


def non_max_suppression(prediction: torch.Tensor, cfg: NmsConfig) -> list[torch.Tensor]:
    """Decoded model output [B, N, 5 + nc] -> per image [K, 6] (x1, y1, x2, y2, conf, cls) in input pixels.

    Unlike v7.0 there is no wall-clock limit: v7.0 silently stops (and drops every later image's detections)
    when NMS takes longer than 0.5 + 0.05 * B seconds; detval always finishes.
    """
    return [nms_select(x, cfg) for x in nms_candidates(prediction, cfg.conf_thres, cfg.multi_label)]
