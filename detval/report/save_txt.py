"""Per-image detection files as val.py --save-txt writes them ('cls cx cy w h [conf]', normalized, %g)."""
from __future__ import annotations

from pathlib import Path

import torch

from detval.ops.boxes import xyxy2xywh


def detection_lines(boxes: torch.Tensor, conf: torch.Tensor, cls: torch.Tensor, orig_hw: tuple[int, int],
                    save_conf: bool) -> list[str]:
    """boxes: float32 [N, 4] xyxy in original pixels; conf, cls: [N]. One line per detection."""
    gn = torch.tensor(orig_hw)[[1, 0, 1, 0]]  # whwh
    lines = []
    for *xyxy, c, k in torch.cat((boxes, conf[:, None], cls[:, None]), 1).tolist():
        xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
        line = (k, *xywh, c) if save_conf else (k, *xywh)
        lines.append(("%g " * len(line)).rstrip() % line)
    return lines


def write_detection_txt(path: Path, lines: list[str]) -> None:
    """v7.0 appends to the file and writes nothing for an image without detections; so does detval."""
    if lines:
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")
