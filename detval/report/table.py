"""The lines val.py prints: the table header, the 'all' row, per-class rows and the Speed line."""
from __future__ import annotations

from detval.results import ValResult

_ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


def table_header() -> str:
    return ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


def table_rows(result: ValResult, verbose: bool) -> list[str]:
    """'all' and, as val.py (verbose, or nc < 50, and nc > 1), one row per class with labels.

    Per-class rows show the number of images in the whole set, as v7.0 prints it.
    """
    rows = [_ROW % ("all", result.images, result.instances, result.p, result.r, result.map50, result.map)]
    nc = len(result.names)
    if (verbose or nc < 50) and nc > 1:
        rows += [_ROW % (c.name, c.images, c.instances, c.p, c.r, c.map50, c.map) for c in result.per_class]
    return rows


def speed_line(speed_ms: dict[str, float], batch_size: int, imgsz: int) -> str:
    shape = (batch_size, 3, imgsz, imgsz)
    return ("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s"
            % (speed_ms["preprocess"], speed_ms["inference"], speed_ms["nms"], shape))
