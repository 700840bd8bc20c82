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

import functools
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from detval.forked import fork_map

BLOCK_BYTES = 1 << 18          # text decoded at once: its objects fit in the allocator's reused arenas (1 MB blocks: 3x the page faults)
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


def _array_bodies(chunks, opens: bool = True, closes: bool = True):
    """The element text of a JSON array read as `chunks` (bytes), in pieces split between elements (after a
    '}' followed by a comma): b'[' + piece + b']' is a JSON array of whole elements, and the pieces joined by
    commas are the array's. opens / closes: the text starts with '[' / ends with ']' (False for a middle part of
    the file, see split_ranges). Raises NotFast when it does not."""
    chunks = iter(chunks)
    pending, split = next(chunks, b""), False
    if opens:
        pending = pending.lstrip()
        if not pending.startswith(b"["):
            raise NotFast
        pending = pending[1:]
    for chunk in chunks:
        data = pending + chunk
        cut = data.rfind(b"}")
        rest = data[cut + 1:].lstrip() if cut >= 0 else b""
        if not rest.startswith(b","):                  # no split point in this block yet
            pending = data
            continue
        yield data[:cut + 1]
        pending, split = rest[1:], True
    body = pending.rstrip()
    if closes:
        if not body.endswith(b"]"):
            raise NotFast
        body = body[:-1]
    if split and not body.strip():                     # a trailing comma
        raise NotFast
    yield body


def _chunks(path: str | Path, start: int, end: int, block_bytes: int):
    """The bytes [start, end) of a file, block_bytes at a time."""
    with open(path, "rb") as f:
        f.seek(start)
        while start < end:
            chunk = f.read(min(block_bytes, end - start))
            if not chunk:
                return
            start += len(chunk)
            yield chunk


_SPLIT = re.compile(rb"\}\s*,")


def split_ranges(path: str | Path, parts: int, window: int = 1 << 20) -> list[tuple[int, int]]:
    """The file's bytes as up to `parts` ranges [start, end) that meet at a comma after a '}' (the comma itself
    in neither): each middle range is a run of whole array elements. A '}' inside a string can make a wrong
    split; the part before it then ends inside a string, which the decoder rejects (NotFast)."""
    size = os.path.getsize(path)
    cuts = []
    with open(path, "rb") as f:
        for i in range(1, parts):
            f.seek(i * size // parts)
            m = _SPLIT.search(f.read(window))
            if m:
                comma = i * size // parts + m.end() - 1
                if not cuts or comma > cuts[-1]:
                    cuts.append(comma)
    return list(zip([0] + [c + 1 for c in cuts], cuts + [size]))


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


class _Columns:
    """Preallocated detection columns, `rows` each: in memory shared with forked children when `shared` (so
    that they fill their own row ranges), private otherwise. Pages are mapped lazily: only rows written become
    resident."""

    def __init__(self, rows: int, shared: bool) -> None:
        if shared:
            buf = mmap.mmap(-1, max(rows, 1) * 7 * 8)
            flat = np.frombuffer(buf, np.float64)
        else:
            flat = np.empty(max(rows, 1) * 7)
        self.image_id, self.category_id, self.scores = flat[:rows], flat[rows:2 * rows], flat[2 * rows:3 * rows]
        self.boxes = flat[3 * rows:7 * rows].reshape(rows, 4)

    def columns(self):
        return self.image_id, self.category_id, self.boxes, self.scores

    def fill(self, row: int, rec: np.ndarray) -> None:
        end = row + len(rec)
        self.image_id[row:end], self.category_id[row:end] = rec["image_id0"], rec["category_id0"]
        self.scores[row:end] = rec["score0"]
        for j in range(4):
            self.boxes[row:end, j] = rec[f"bbox{j}"]

    def compact(self, first_rows: list[int], counts: list[int]) -> DetectionColumns:
        """Each part's rows moved down to follow the previous part's -> the columns in file order."""
        n = 0
        for first, count in zip(first_rows, counts):
            if first != n:
                for col in self.columns():
                    col[n:n + count] = col[first:first + count]     # numpy copies overlapping ranges safely
            n += count
        return DetectionColumns(*(col[:n] for col in self.columns()))


def _parse_range(path, byte_range: tuple[int, int], opens: bool, closes: bool, out: _Columns, first_row: int,
                 capacity: int, block_bytes: int) -> int:
    """Decode one byte range of a results file into out's rows from first_row on -> the number of detections."""
    decoder, encoder = msgspec.json.Decoder(list[_Detection]), msgspec.msgpack.Encoder()
    n = 0
    for body in _array_bodies(_chunks(path, *byte_range, block_bytes), opens, closes):
        try:
            rec = _records(decoder.decode(b"[" + body + b"]"), encoder)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise NotFast from None
        if n + len(rec) > capacity:      # cannot happen for valid records; guards the preallocation
            raise NotFast
        out.fill(first_row + n, rec)
        n += len(rec)
    return n


def read_detection_columns(path: str | Path, block_bytes: int = BLOCK_BYTES, workers: int = 1) -> DetectionColumns:
    """A COCO results file [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...] as columns.

    Numeric fields only (ids and numbers, other keys ignored); NotFast for anything else, or malformed JSON.
    workers > 1 splits the file into that many byte ranges decoded side by side in forked processes (same
    columns). Memory: the columns (56 bytes a detection) and one block's objects per process; the file is
    never held whole."""
    ranges = split_ranges(path, workers) if workers > 1 else [(0, os.path.getsize(path))]
    capacity = [(end - start) // MIN_DETECTION_BYTES + 1 for start, end in ranges]
    first_rows = np.r_[0, np.cumsum(capacity)[:-1]].tolist()
    out = _Columns(sum(capacity), shared=len(ranges) > 1)

    def parse(i: int) -> int:
        return _parse_range(path, ranges[i], i == 0, i == len(ranges) - 1, out, first_rows[i], capacity[i],
                            block_bytes)

    return out.compact(first_rows, fork_map(parse, len(ranges)))


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


# ---- writing: a results list as json.dump writes it, from columns ----------------------------------------------

WRITE_ROWS = 1 << 16            # records formatted at once (about 6 MB of text matrix)
TABLE_INTS = 10 ** 6            # integer parts (and category ids) written through a table: below this


@functools.lru_cache(maxsize=None)
def _int_table() -> np.ndarray:
    """str(k) for k < TABLE_INTS, right-aligned in 6 bytes, leading 0 bytes (filler that _compact drops)."""
    k = np.arange(TABLE_INTS)
    text = (np.stack([k // 10 ** p % 10 for p in range(5, -1, -1)], axis=1) + ord("0")).astype(np.uint8)
    n_digits = 1 + sum((k >= 10 ** p).astype(np.int64) for p in range(1, 6))
    text *= np.arange(6)[None, :] >= (6 - n_digits)[:, None]
    return text


@functools.lru_cache(maxsize=None)
def _frac_table(decimals: int) -> np.ndarray:
    """'.' + the decimals of f / 10 ** decimals for f < 10 ** decimals, trailing zeros dropped (one kept), then
    0 bytes. -> uint8 [10 ** decimals, decimals + 1]."""
    f = np.arange(10 ** decimals)
    digits = np.stack([f // 10 ** p % 10 for p in range(decimals - 1, -1, -1)], axis=1)
    zeros_after = np.logical_and.accumulate(digits[:, :0:-1] == 0, axis=1)[:, ::-1]   # behind the first digit
    text = (digits + ord("0")).astype(np.uint8)
    text[:, 1:] *= ~zeros_after
    return np.concatenate([np.full((len(f), 1), ord("."), np.uint8), text], axis=1)


def _text(s: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(s.encode(), np.uint8), (n, len(s)))


def _sign(negative: np.ndarray) -> np.ndarray:
    return (negative * ord("-")).astype(np.uint8)[:, None]


def _int_field(v: np.ndarray) -> np.ndarray | None:
    """int64 [n] (0 <= v < TABLE_INTS) -> str(v) (filler 0 bytes), as few columns as the largest needs; None for
    other values."""
    if not len(v):
        return np.zeros((0, 1), np.uint8)
    if not (v.min() >= 0 and v.max() < TABLE_INTS):
        return None
    return _int_table()[v, 6 - len(str(int(v.max()))):]


def _float_field(x: np.ndarray, decimals: int) -> np.ndarray | None:
    """float64 [n] that are round(., decimals) results -> repr(x) text (filler 0 bytes); None when some value
    is outside what this covers (|x| >= TABLE_INTS, decimals > 5, or not so rounded).

    x is the double nearest to r / 10 ** decimals for an integer r; that decimal, trailing zeros dropped, reads
    back as x and no shorter or nearer decimal does (every other one with as many digits is 10 ** -decimals
    away, far beyond half an ulp below 1e6), so it is repr(x); below 1e-4 repr writes it as '5e-05'."""
    scale = 10 ** decimals
    r = np.rint(x * scale)
    if decimals > 5 or not (np.abs(r) < TABLE_INTS * scale).all() or not (r / scale == x).all():
        return None
    a = np.abs(r).astype(np.int64)
    whole = a // scale
    negative = np.signbit(x)
    out = np.concatenate(([_sign(negative)] if negative.any() else []) +
                         [_int_field(whole), _frac_table(decimals)[a - whole * scale]], axis=1)
    tiny = np.flatnonzero((a > 0) & (a < 10 ** (decimals - 4)))   # one digit (decimals 5): '-'? 'd' 'e-05'
    if len(tiny):
        out = np.concatenate([np.zeros((len(a), 1), np.uint8), out], axis=1)   # room for '-' 'd' 'e-05'
        out[tiny] = 0
        out[tiny, -5] = ord("0") + a[tiny]
        out[tiny, -4:] = np.frombuffer(f"e-{decimals:02d}".encode(), np.uint8)
        out[tiny, -6] = negative[tiny] * ord("-")
    return out


def _compact(matrix: np.ndarray) -> bytes:
    return matrix.tobytes().translate(None, b"\0")


def results_text(image_texts: list[str], image: np.ndarray, category: np.ndarray, boxes: np.ndarray,
                 scores: np.ndarray, rows: int = WRITE_ROWS):
    """The text json.dump(results, f) writes for results[i] = {"image_id": ids[image[i]], "category_id":
    category[i], "bbox": boxes[i].tolist(), "score": scores[i]}, in pieces (bytes).

    image_texts[j]: json.dumps of image j's id; image [N] int64; category [N] int64; boxes [N, 4] float64 as
    round(., 3) leaves them, scores [N] float64 as round(., 5) leaves them. Rows with other values are written
    by json.dumps itself (same text, slower)."""
    yield b"["
    for i, piece in enumerate(_pieces(_id_matrix(image_texts), image_texts, image, category, boxes, scores,
                                      0, len(scores), rows)):
        yield piece[2:] if i == 0 else piece
    yield b"]"


def _id_matrix(image_texts: list[str]) -> np.ndarray:
    """image_texts right-aligned in a uint8 matrix, 0 bytes before (filler)."""
    encoded = [t.encode() for t in image_texts]
    width = max(map(len, encoded), default=1)
    ids = np.zeros((len(encoded), width), np.uint8)
    for j, t in enumerate(encoded):
        ids[j, width - len(t):] = np.frombuffer(t, np.uint8)
    return ids


def _pieces(ids: np.ndarray, image_texts, image, category, boxes, scores, start: int, stop: int, rows: int):
    """', ' + record text for rows [start, stop), `rows` records a piece."""
    for a in range(start, stop, rows):
        part = slice(a, min(a + rows, stop))
        yield _record_text(ids, image[part], category[part], boxes[part], scores[part], image_texts)


def _record_text(ids: np.ndarray, image, category, boxes, scores, image_texts) -> bytes:
    """', ' + one record's JSON for each row, joined."""
    n = len(scores)
    fields = [_int_field(category)] + [_float_field(boxes[:, j], 3) for j in range(4)] + [_float_field(scores, 5)]
    if any(f is None for f in fields):
        import json
        return b"".join(b", " + json.dumps({"image_id": json.loads(image_texts[i]), "category_id": c, "bbox": b,
                                             "score": s}).encode()
                        for i, c, b, s in zip(image.tolist(), category.tolist(), boxes.tolist(), scores.tolist()))
    cat, b0, b1, b2, b3, score = fields
    return _compact(np.concatenate([
        _text(', {"image_id": ', n), ids[image], _text(', "category_id": ', n), cat,
        _text(', "bbox": [', n), b0, _text(", ", n), b1, _text(", ", n), b2, _text(", ", n), b3,
        _text('], "score": ', n), score, _text("}", n)], axis=1))


def write_results(path: str | Path, image_texts: list[str], image, category, boxes, scores,
                  workers: int = 1) -> None:
    """results_text into a file: the bytes val.py's json.dump writes for these detections. workers > 1: the
    rows are formatted in that many forked processes, into memory shared with this one, then written in order."""
    n = len(scores)
    workers = max(1, min(workers, n // WRITE_ROWS))
    if workers == 1:
        with open(path, "wb") as f:
            for piece in results_text(image_texts, image, category, boxes, scores):
                f.write(piece)
        return
    ids = _id_matrix(image_texts)
    # at most: separators and keys, the widest id, an int64 category, four boxes and a score as repr (24 each)
    record_bytes = 64 + ids.shape[1] + 20 + 5 * 24
    bounds = [n * i // workers for i in range(workers + 1)]
    starts = [record_bytes * b for b in bounds]
    buf = mmap.mmap(-1, starts[-1])

    def part(i: int) -> int:
        pos = starts[i]
        for piece in _pieces(ids, image_texts, image, category, boxes, scores, bounds[i], bounds[i + 1],
                             WRITE_ROWS):
            buf[pos:pos + len(piece)] = piece
            pos += len(piece)
        return pos - starts[i]

    lengths = fork_map(part, workers)
    with open(path, "wb") as f, memoryview(buf) as view:
        f.write(b"[")
        for i, length in enumerate(lengths):
            f.write(view[starts[i] + (2 if i == 0 else 0):starts[i] + length])
        f.write(b"]")
