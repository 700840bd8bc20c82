"""Non-maximum suppression over decoded YOLOv5 outputs, as v7.0 val.py runs it, minus its time limit."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision

from detval.ops.boxes import xywh2xyxy

MAX_WH = 7680  # class offset in pixels for batched (per-class) NMS, as v7.0


@dataclass(frozen=True)
class NmsConfig:
    """val.py's NMS settings. `agnostic` is what --single-cls turns on."""

    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    max_nms: int = 30000
    multi_label: bool = True
    agnostic: bool = False


def non_max_suppression(prediction: torch.Tensor, cfg: NmsConfig) -> list[torch.Tensor]:
    """Decoded model output [B, N, 5 + nc] (cx, cy, w, h, obj, class scores) -> per image [K, 6] (x1, y1, x2, y2, conf, cls).

    Boxes stay in input pixels. Unlike v7.0 there is no wall-clock limit: v7.0 silently stops (and drops every
    later image's detections) when NMS takes longer than 0.5 + 0.05 * B seconds; detval always finishes.
    The input is not modified.
    """
    nc = prediction.shape[2] - 5
    multi_label = cfg.multi_label and nc > 1
    candidates = prediction[..., 4] > cfg.conf_thres
    output = []
    for xi, x in enumerate(prediction):
        x = x[candidates[xi]]  # boolean indexing copies, so the in-place product below leaves `prediction` alone
        if not x.shape[0]:
            output.append(torch.zeros((0, 6), device=prediction.device))
            continue
        x[:, 5:] *= x[:, 4:5]  # conf = obj_conf * cls_conf
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = (x[:, 5:] > cfg.conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], x[i, 5 + j, None], j[:, None].float()), 1)
        else:
            conf, j = x[:, 5:].max(1, keepdim=True)
            x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > cfg.conf_thres]
        if not x.shape[0]:
            output.append(torch.zeros((0, 6), device=prediction.device))
            continue
        x = x[x[:, 4].argsort(descending=True)[: cfg.max_nms]]
        offsets = x[:, 5:6] * (0 if cfg.agnostic else MAX_WH)
        keep = torchvision.ops.nms(x[:, :4] + offsets, x[:, 4], cfg.iou_thres)[: cfg.max_det]
        output.append(x[keep])
    return output
