"""Check every image and label file before inference, as YOLOv5 v7.0's verify_image_label, and say what is wrong.

A bad image or label file excludes that image (with a reason naming the file, and the line for labels); the run
goes on with the rest, as in YOLOv5, and the exclusions are listed in the summary and results.json. Unlike YOLOv5,
detval never writes into the dataset (v7.0 re-saves JPEGs with a broken end marker), and a class id outside
[0, nc) excludes the image instead of failing later.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from detval.data.dataset_yaml import IMG_FORMATS, DataError, label_path_for
from detval.results import Excluded

_ORIENTATION = 274  # EXIF tag


@dataclass(frozen=True)
class ImageRecord:
    """One usable image. shape_hw: original (height, width) after EXIF rotation; labels: float32 [n, 5]
    (cls, cx, cy, w, h), normalized to the image."""

    path: Path
    shape_hw: tuple[int, int]
    labels: np.ndarray


@dataclass
class ScanResult:
    records: list[ImageRecord]
    excluded: list[Excluded] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_found_labels: int = 0
    n_missing: int = 0
    n_empty: int = 0
    n_corrupt: int = 0


class _Bad(Exception):
    pass


def exif_size_hw(im: Image.Image) -> tuple[int, int]:
    """(height, width) as displayed: swapped for EXIF orientations 6 and 8 (rotated 90 degrees)."""
    w, h = im.size
    try:
        if im.getexif().get(_ORIENTATION) in (6, 8):
            w, h = h, w
    except Exception:  # noqa: BLE001 - unreadable EXIF: use the stored size, as YOLOv5
        pass
    return h, w


def segments_to_boxes(segments: list[np.ndarray]) -> np.ndarray:
    """Polygons [k, 2] (normalized xy) -> boxes [n, 4] (cx, cy, w, h) of their extents, as v7.0 segments2boxes."""
    boxes = []
    for s in segments:
        x, y = s.T
        boxes.append([x.min(), y.min(), x.max(), y.max()])
    b = np.array(boxes)
    y = np.copy(b)
    y[:, 0] = (b[:, 0] + b[:, 2]) / 2
    y[:, 1] = (b[:, 1] + b[:, 3]) / 2
    y[:, 2] = b[:, 2] - b[:, 0]
    y[:, 3] = b[:, 3] - b[:, 1]
    return y


def read_labels(path: Path, nc: int) -> tuple[np.ndarray, str]:
    """Parse a YOLO label file -> (float32 [n, 5], warning). Raises _Bad naming file:line on a malformed row."""
    rows, lines = [], []
    for lineno, text in enumerate(path.read_text(errors="replace").strip().splitlines(), 1):
        if len(text):
            rows.append(text.split())
            lines.append(lineno)
    if any(len(r) > 6 for r in rows):  # polygon segments
        try:
            classes = np.array([r[0] for r in rows], dtype=np.float32)
            segments = [np.array(r[1:], dtype=np.float32).reshape(-1, 2) for r in rows]
        except ValueError as e:
            raise _Bad(f"{path}: malformed segment row ({e})") from None
        lb = np.concatenate((classes.reshape(-1, 1), segments_to_boxes(segments)), 1).astype(np.float32)
    else:
        for r, ln in zip(rows, lines):
            if len(r) != 5:
                raise _Bad(f"{path}:{ln}: {len(r)} columns, expected 5 (cls cx cy w h)")
        try:
            lb = np.array(rows, dtype=np.float32).reshape(-1, 5)
        except ValueError:
            bad = next(ln for r, ln in zip(rows, lines) if not _numeric(r))
            raise _Bad(f"{path}:{bad}: not a number") from None
    for k, ln in enumerate(lines if len(lines) == len(lb) else range(1, len(lb) + 1)):
        row = lb[k]
        if (row < 0).any():
            raise _Bad(f"{path}:{ln}: negative value")
        if (row[1:] > 1).any():
            raise _Bad(f"{path}:{ln}: coordinates outside [0, 1] (not normalized?)")
        if row[0] != int(row[0]) or row[0] >= nc:
            raise _Bad(f"{path}:{ln}: class {row[0]:g} outside [0, {nc})")
    warning = ""
    if len(lb):
        _, i = np.unique(lb, axis=0, return_index=True)
        if len(i) < len(lb):
            warning = f"{path}: {len(lb) - len(i)} duplicate labels removed"
            lb = lb[i]  # sorted, as v7.0
    return lb.reshape(-1, 5), warning


def _numeric(row: list[str]) -> bool:
    try:
        [float(x) for x in row]
        return True
    except ValueError:
        return False


def _verify(image: Path, nc: int) -> tuple:
    """-> (record or None, excluded or None, warning, label status: 'found'|'missing'|'empty')"""
    try:
        try:
            with Image.open(image) as im:
                im.verify()
                fmt = (im.format or "").lower()
            with Image.open(image) as im:
                shape_hw = exif_size_hw(im)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
            raise _Bad(f"{image}: not a readable image ({e.__class__.__name__}: {e})") from None
        if shape_hw[0] < 10 or shape_hw[1] < 10:
            raise _Bad(f"{image}: image size {shape_hw[1]}x{shape_hw[0]} < 10 pixels")
        if fmt not in IMG_FORMATS:
            raise _Bad(f"{image}: invalid image format {fmt}")
        warning = ""
        if fmt in ("jpg", "jpeg"):
            with open(image, "rb") as f:
                f.seek(-2, 2)
                if f.read() != b"\xff\xd9":
                    # v7.0 re-saves such files in place; detval leaves the user's data alone and checks decoding
                    _decodes_fully(image)
                    warning = f"{image}: JPEG without end marker (truncated?), decoded anyway"
        lf = label_path_for(image)
        if lf.is_file():
            lb, w2 = read_labels(lf, nc)
            status = "found" if len(lb) else "empty"
            warning = "; ".join(w for w in (warning, w2) if w)
        else:
            lb, status = np.zeros((0, 5), dtype=np.float32), "missing"
        return ImageRecord(image, shape_hw, lb), None, warning, status
    except _Bad as e:
        return None, Excluded(str(image), str(e)), "", ""
    except OSError as e:
        return None, Excluded(str(image), f"{image}: {e}"), "", ""


def _decodes_fully(image: Path) -> None:
    import cv2

    if cv2.imread(str(image)) is None:
        raise _Bad(f"{image}: corrupt JPEG, cannot be decoded")
    with Image.open(image) as im:
        try:
            ImageOps.exif_transpose(im).load()
        except Exception as e:  # noqa: BLE001
            raise _Bad(f"{image}: corrupt JPEG ({e})") from None


def scan_images(images: list[Path], nc: int, threads: int = 8) -> ScanResult:
    """Verify every image and its labels (in parallel, results in input order)."""
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda p: _verify(p, nc), images))
    res = ScanResult(records=[])
    for rec, exc, warning, status in results:
        if warning:
            res.warnings.append(warning)
        if exc is not None:
            res.excluded.append(exc)
            res.n_corrupt += 1
            continue
        res.records.append(rec)
        res.n_found_labels += status == "found"
        res.n_missing += status == "missing"
        res.n_empty += status == "empty"
    if not res.records:
        why = f": {res.excluded[0].reason}" if res.excluded else ""
        raise DataError(f"no usable images among {len(images)}{why}")
    if res.n_found_labels == 0:
        res.warnings.append(f"no labels found (looked for {label_path_for(images[0])} and alike)")
    return res
