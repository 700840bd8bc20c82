"""COCO JSON text straight to and from numpy columns, without a Python object per detection.

Reading: msgspec decodes the file against a fixed schema block by block (about a megabyte of text at a time);
each block's records are re-encoded as MessagePack, where every number is a big-endian float64 at a fixed
offset, and viewed as a structured numpy array. msgspec's float parsing is correctly rounded, as Python's
float() and json.load (tests/test_coco_format.py checks it on hard cases), so the columns hold the same doubles
the standard library would give. Anything the fast path does not cover (string image ids, NaN, a field of
another type, malformed JSON) raises NotFast, and the caller reads the file the general way, which also words
the errors.

Writing: the results list exactly as `json.dump(list_of_dicts, f)` writes it (default separators, floats as
repr), assembled from per-value strings with numpy fancy indexing instead of one dict per detection.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

BLOCK_BYTES = 1 << 20          # text decoded at once: small enough to stay in cache, large enough to amortize calls
MIN_DETECTION_BYTES = 56       # len('{"image_id":1,"category_id":1,"bbox":[1,1,1,1],"score":1}'): no record is shorter
EXACT_INT = 2 ** 53            # float64 holds every integer below this


class NotFast(Exception):
    """The fast reader does not cover this file; read it the general way."""


class _Detection(msgspec.Struct, gc=False):
    # ids as float: MessagePack then stores every field as a float64 and records have one fixed layout
    image_id: float
    category_id: float
    bbox: tuple[float, float, float, float]
    score: float


class _GtImage(msgspec.Struct, gc=False):
    id: int | str


class _GtCategory(msgspec.Struct, gc=False):
    id: int
    name: str | None = None


class _GtAnnotation(msgspec.Struct, gc=False):
    id: int
    image_id: int | str
    category_id: int
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: int = 0


class _GtFile(msgspec.Struct, gc=False):
    images: list[_GtImage]
    categories: list[_GtCategory]
    annotations: list[_GtAnnotation] | None = None


def _record_dtype() -> np.dtype:
    """The MessagePack layout of one _Detection: a 4-entry map, fixstr keys, 0xcb-tagged float64 values."""
    fields, offset = [], 1                                   # 0x84: map of 4
    for key, n_values in (("image_id", 1), ("category_id", 1), ("bbox", 4), ("score", 1)):
        offset += 1 + len(key) + (1 if n_values > 1 else 0)  # fixstr tag + key (+ 0x94: array of 4)
        for v in range(n_values):
            fields.append((f"{key}{v}", ">f8", offset + 1))
            offset += 9
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": offset})


_RECORD = _record_dtype()
_TAG_OFFSETS = np.array([_RECORD.fields[name][1] - 1 for name in _RECORD.names])   # where each 0xcb tag sits


@dataclass(frozen=True, eq=False)
class DetectionColumns:
    """A results file's numbers in file order: image_id, category_id [N] float64 (as written: not yet checked to
    be integers), boxes [N, 4] float64 xywh, scores [N] float64."""

    image_id: np.ndarray
    category_id: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def _array_bodies(f, block_bytes: int):
    """The element text of the top-level JSON array in binary file f, in pieces split between elements (after a
    '}' followed by a comma): b'[' + piece + b']' is a JSON array of whole elements, and the pieces joined by
    commas are the file's array. Raises NotFast when the file is not '[' ... ']'."""
    pending = f.read(block_bytes).lstrip()
    if not pending.startswith(b"["):
        raise NotFast
    pending, split = pending[1:], False
    while True:
        chunk = f.read(block_bytes)
        data = pending + chunk
        if not chunk:
            body = data.rstrip()
            if not body.endswith(b"]") or (split and not body[:-1].strip()):   # also a trailing comma
                raise NotFast
            yield body[:-1]
            return
        cut = data.rfind(b"}")
        rest = data[cut + 1:].lstrip() if cut >= 0 else b""
        if not rest.startswith(b","):                  # no split point in this block yet
            pending = data
            continue
        yield data[:cut + 1]
        pending, split = rest[1:], True


def _records(dets: list, encoder) -> np.ndarray:
    """msgspec-decoded _Detections -> structured array of _RECORD; NotFast if the bytes are not that layout."""
    packed = encoder.encode(dets)
    header = len(packed) - len(dets) * _RECORD.itemsize
    if header not in (1, 3, 5):
        raise NotFast
    raw = np.frombuffer(packed, np.uint8, offset=header).reshape(len(dets), _RECORD.itemsize)
    if len(dets) and not (raw[:, _TAG_OFFSETS] == 0xCB).all():
        raise NotFast
    return np.frombuffer(packed, _RECORD, offset=header)


def read_detection_columns(path: str | Path, block_bytes: int = BLOCK_BYTES) -> DetectionColumns:
    """A COCO results file [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...] as columns.

    Numeric fields only (ids and numbers, other keys ignored); NotFast for anything else, or malformed JSON.
    Memory: the columns (56 bytes a detection) and one block's objects; the file is never held whole."""
    n_max = os.path.getsize(path) // MIN_DETECTION_BYTES + 1
    # np.empty maps pages lazily: only the rows written become resident
    image_id, category_id, scores = np.empty(n_max), np.empty(n_max), np.empty(n_max)
    boxes = np.empty((n_max, 4))
    decoder, encoder = msgspec.json.Decoder(list[_Detection]), msgspec.msgpack.Encoder()
    n = 0
    with open(path, "rb") as f:
        for body in _array_bodies(f, block_bytes):
            try:
                rec = _records(decoder.decode(b"[" + body + b"]"), encoder)
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise NotFast from None
            end = n + len(rec)
            if end > n_max:        # cannot happen for valid records; guards the preallocation
                raise NotFast
            image_id[n:end], category_id[n:end], scores[n:end] = rec["image_id0"], rec["category_id0"], rec["score0"]
            for j in range(4):
                boxes[n:end, j] = rec[f"bbox{j}"]
            n = end
    return DetectionColumns(image_id[:n], category_id[:n], boxes[:n], scores[:n])


@dataclass(frozen=True, eq=False)
class GroundTruthColumns:
    """An instances file's fields that COCO bbox evaluation reads, as lists and arrays in file order.

    image_ids, ann_image_ids: lists of int or str; category_ids [K] int64 with names [K] (None when absent);
    ann_ids, ann_category [N] int64; ann_boxes [N, 4] float64; ann_area [N] float64; ann_crowd [N] bool."""

    image_ids: list
    category_ids: np.ndarray
    category_names: list[str | None]
    ann_ids: np.ndarray
    ann_image_ids: list
    ann_category: np.ndarray
    ann_boxes: np.ndarray
    ann_area: np.ndarray
    ann_crowd: np.ndarray


def read_ground_truth_columns(path: str | Path) -> GroundTruthColumns:
    """A COCO instances file decoded against the bbox schema (segmentations and other keys are skipped, not
    built). NotFast when a field has another type (a str category name is required if present) or the JSON is
    malformed; the general reader then reports what is wrong."""
    try:
        data = msgspec.json.decode(Path(path).read_bytes(), type=_GtFile)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise NotFast from None
    anns = data.annotations or []
    try:
        return _gt_columns(data, anns)
    except OverflowError:          # an id beyond int64
        raise NotFast from None


def _gt_columns(data: _GtFile, anns: list[_GtAnnotation]) -> GroundTruthColumns:
    return GroundTruthColumns(
        image_ids=[im.id for im in data.images],
        category_ids=np.array([c.id for c in data.categories], np.int64),
        category_names=[c.name for c in data.categories],
        ann_ids=np.array([a.id for a in anns], np.int64),
        ann_image_ids=[a.image_id for a in anns],
        ann_category=np.array([a.category_id for a in anns], np.int64),
        ann_boxes=np.array([a.bbox for a in anns], np.float64).reshape(-1, 4),
        ann_area=np.array([a.area for a in anns], np.float64),
        ann_crowd=np.array([a.iscrowd != 0 for a in anns], bool))
