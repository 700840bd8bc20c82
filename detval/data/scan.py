"""Check every image and label file before inference, as YOLOv5 v7.0's verify_image_label, and say what is wrong.

A bad image or label file excludes that image (with a reason naming the file, and the line for labels); the run
goes on with the rest, as in YOLOv5, and the exclusions are listed in the summary and results.json. Unlike YOLOv5,
detval never writes into the dataset (v7.0 re-saves JPEGs with a broken end marker), and a class id that is not an
integer in [0, nc) excludes the image instead of failing later.
"""
from __future__ import annotations

import threading
import warnings as pywarnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from detval.data.dataset_yaml import IMG_FORMATS, DataError, label_path_for
from detval.results import Excluded

_ORIENTATION = 274  # EXIF tag id
HELP_URL = "See https://github.com/ultralytics/yolov5/wiki/Train-Custom-Data"  # v7.0's pointer, in its warnings
_THREADS = 8  # mostly waiting on file reads (network disks), so not tied to the core count as v7.0's NUM_THREADS


@dataclass(frozen=True)
class ImageRecord:
    """One usable image. shape_hw: original (height, width) after EXIF rotation; labels: float32 [n, 5]
    (cls, cx, cy, w, h), normalized to the image."""

    path: Path
    shape_hw: tuple[int, int]
    labels: np.ndarray
    decode_reported: bool = False  # the scan printed what the JPEG decoder says of it: loading stays quiet


@dataclass
class ScanResult:
    """records: usable images in input order. Counts follow v7.0's scan line `{n_found_labels} images,
    {n_missing + n_empty} backgrounds, {n_corrupt} corrupt`: a label file counts as found as soon as it exists
    (empty, or excluding its image for a bad row, included); n_corrupt = len(excluded)."""

    records: list[ImageRecord]
    excluded: list[Excluded] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_found_labels: int = 0
    n_missing: int = 0
    n_empty: int = 0
    n_corrupt: int = 0

    @property
    def n_instances(self) -> int:
        return sum(len(r.labels) for r in self.records)


class _Bad(Exception):
    """A problem that excludes one image; the message names the file (and line)."""


def exif_size_hw(im: Image.Image) -> tuple[int, int]:
    """(height, width) as displayed: swapped for EXIF orientations 6 and 8 (rotated 90 degrees).

    Reads the tag the way v7.0's exif_size does (`_getexif`, JPEG/PNG/WebP/MPO only), so that the batch plan sees
    the same shapes as v7.0 for every format.
    """
    w, h = im.size
    try:
        if dict(im._getexif().items())[_ORIENTATION] in (6, 8):
            w, h = h, w
    except Exception:  # noqa: BLE001 - no EXIF, no tag, or a format without _getexif: stored size, as v7.0
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


def _rows(text: str) -> list[tuple[int, list[str]]]:
    """(1-based line number in the file, fields) of each row v7.0 reads: `text.strip().splitlines()`, empty lines
    skipped. The numbers count the lines that strip() removes at the top, so they match an editor's."""
    first = len((text[: len(text) - len(text.lstrip())] + "x").splitlines())
    return [(first + k, line.split()) for k, line in enumerate(text.strip().splitlines()) if len(line)]


def _floats(path: Path, ln: int, fields: list[str]) -> np.ndarray:
    try:
        return np.array(fields, dtype=np.float32)
    except ValueError:
        bad = next((f for f in fields if not _is_float(f)), " ".join(fields))
        raise _Bad(f"{path}:{ln}: not a number: {bad!r}") from None


def _is_float(s: str) -> bool:
    try:
        np.float32(s)
        return True
    except ValueError:
        return False


def read_labels(path: Path, nc: int) -> tuple[np.ndarray, int]:
    """Parse a YOLO label file -> (float32 [n, 5] (cls, cx, cy, w, h), number of duplicate rows removed).

    As v7.0: a file with any row of more than 6 fields holds polygons (cls x1 y1 x2 y2 ...), turned into their
    boxes; otherwise every row has 5 fields. Values must be >= 0 and box values <= 1 (checked on the box, so a
    polygon may stick out as far as v7.0 lets it). Repeated rows are dropped with v7.0's np.unique, which leaves
    the rows sorted. Added by detval: the class must be an integer in [0, nc).
    Raises _Bad naming file:line for the first bad row.
    """
    rows = _rows(path.read_text(errors="replace"))
    if any(len(f) > 6 for _, f in rows):
        classes, segments = [], []
        for ln, f in rows:
            v = _floats(path, ln, f)
            if len(v) < 3 or len(v) % 2 == 0:
                raise _Bad(f"{path}:{ln}: polygon row with {len(v) - 1} coordinates, expected an even number >= 2")
            classes.append(v[0])
            segments.append(v[1:].reshape(-1, 2))
        lb = np.concatenate((np.array(classes, dtype=np.float32).reshape(-1, 1), segments_to_boxes(segments)), 1)
    else:
        for ln, f in rows:
            if len(f) != 5:
                raise _Bad(f"{path}:{ln}: {len(f)} columns, expected 5 (cls cx cy w h)")
        lb = np.stack([_floats(path, ln, f) for ln, f in rows]) if rows else np.zeros((0, 5), np.float32)
    lb = lb.astype(np.float32, copy=False)
    for (ln, _), row in zip(rows, lb):
        if not (row >= 0).all():  # NaN fails here too, as in v7.0
            raise _Bad(f"{path}:{ln}: negative or invalid value {row[~(row >= 0)][0]:g}")
        if not (row[1:] <= 1).all():
            raise _Bad(f"{path}:{ln}: coordinate {row[1:][~(row[1:] <= 1)][0]:g} > 1 (not normalized?)")
        if row[0] != np.floor(row[0]) or row[0] >= nc:
            raise _Bad(f"{path}:{ln}: class {row[0]:g} outside the integers 0..{nc - 1}")
    duplicates = 0
    if len(lb):
        _, i = np.unique(lb, axis=0, return_index=True)
        duplicates = len(lb) - len(i)
        if duplicates:
            lb = lb[i]  # sorted by np.unique, as v7.0 leaves them
    return lb.reshape(-1, 5), duplicates


def _check_image(image: Path) -> tuple[tuple[int, int], str]:
    """-> ((h, w), warning). Raises _Bad when PIL cannot read it, it is under 10 px, or its format is not allowed."""
    try:
        with Image.open(image) as im:
            im.verify()
            fmt = (im.format or "").lower()
            shape_hw = exif_size_hw(im)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise _Bad(f"{image}: not a readable image ({e.__class__.__name__}: {e})") from None
    if shape_hw[0] < 10 or shape_hw[1] < 10:
        raise _Bad(f"{image}: image size {shape_hw[1]}x{shape_hw[0]} < 10 pixels")
    if fmt not in IMG_FORMATS:
        raise _Bad(f"{image}: invalid image format {fmt}")
    if fmt in ("jpg", "jpeg"):
        with open(image, "rb") as f:
            f.seek(-2, 2)
            if f.read() != b"\xff\xd9":
                # v7.0 re-saves such a file in place; detval leaves the user's data alone, keeps what decodes
                said = _decodes_fully(image)
                return shape_hw, (f"{image}: JPEG without end marker (truncated?)" + (f", libjpeg: {said}" if said
                                                                                   else "")
                                  + ", decoded anyway, not re-saved")
    return shape_hw, ""


def _decodes_fully(image: Path) -> str:
    """Raise _Bad unless both OpenCV and PIL decode the whole file: v7.0 excludes a JPEG that PIL cannot load
    (its restore step fails), so requiring PIL too keeps the same images in the run. Returns what libjpeg said."""
    from detval.data.decode import imread_with_messages

    decoded, said = imread_with_messages(image)
    if decoded is None:
        raise _Bad(f"{image}: corrupt JPEG, cannot be decoded" + (f" (libjpeg: {said})" if said else ""))
    with Image.open(image) as im:
        try:
            ImageOps.exif_transpose(im).load()
        except Exception as e:  # noqa: BLE001
            raise _Bad(f"{image}: corrupt JPEG ({e}" + (f"; libjpeg: {said})" if said else ")")) from None
    return said


def _verify(image: Path, nc: int) -> tuple:
    """-> (record or None, excluded or None, warnings, (found, missing, empty)) for one image, v7.0's counters.
    Python warnings raised meanwhile (PIL's "Corrupt EXIF data") become this image's, named, once each."""
    found = missing = empty = 0
    notes = []
    _caught.warnings = caught = []
    try:
        shape_hw, jpeg_note = _check_image(image)
        notes.append(jpeg_note)
        lf = label_path_for(image)
        if lf.is_file():
            found = 1
            lb, duplicates = read_labels(lf, nc)
            if duplicates:  # v7.0 names the image, not the label file
                notes.append(f"{image}: {duplicates} duplicate labels removed")
            empty = int(len(lb) == 0)
        else:
            lb, missing = np.zeros((0, 5), dtype=np.float32), 1
        record, excluded = ImageRecord(image, shape_hw, lb, decode_reported=bool(jpeg_note)), None
    except _Bad as e:
        record, excluded = None, Excluded(str(image), str(e))
    except Exception as e:  # noqa: BLE001 - any other failure excludes the image, as in v7.0
        record, excluded = None, Excluded(str(image), f"{image}: {e.__class__.__name__}: {e}")
    finally:
        _caught.warnings = None
    notes += [f"{image}: {w}" for w in dict.fromkeys(caught)]
    return record, excluded, [w for w in notes if w], (found, missing, empty)


_caught = threading.local()  # the warnings list of the image this thread is checking, if any


@contextmanager
def _warnings_per_image():
    """While a scan runs, a Python warning raised by a thread that is checking an image goes to that image's list
    (the scan says it with the file's name) instead of stderr, where it would be printed once, without a name.
    Set from the calling thread around the whole thread pool: warnings' filters are process-wide."""
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("always")
        show = pywarnings.showwarning

        def to_image(message, category, filename, lineno, file=None, line=None):
            found = getattr(_caught, "warnings", None)
            if found is None:
                show(message, category, filename, lineno, file, line)
            else:
                found.append(" ".join(str(message).split()))

        pywarnings.showwarning = to_image
        yield


def scan_images(images: list[Path], nc: int, threads: int = _THREADS) -> ScanResult:
    """Verify every image and its labels (thread pool, results in input order) -> ScanResult.

    Raises DataError when no image is usable. No label file at all is only a warning, as in YOLOv5.
    """
    with _warnings_per_image(), ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda p: _verify(Path(p), nc), images))
    res = ScanResult(records=[])
    for rec, exc, warnings, (found, missing, empty) in results:
        res.warnings += warnings
        res.n_found_labels += found
        res.n_missing += missing
        res.n_empty += empty
        if exc is not None:
            res.excluded.append(exc)
            res.n_corrupt += 1
        else:
            res.records.append(rec)
    if not res.records:
        why = f": {res.excluded[0].reason}" if res.excluded else ""
        raise DataError(f"no usable images among {len(images)}{why}")
    if res.n_found_labels == 0:
        res.warnings.append(f"No labels found in {label_path_for(Path(images[0])).parent}. {HELP_URL}")
    return res
