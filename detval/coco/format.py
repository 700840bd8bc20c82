"""COCO JSON in and out: ground truth and detection files as typed numpy tables, and YOLOv5's COCO export.

Box format everywhere here is COCO's: [x_top_left, y_top_left, width, height] in native image pixels.
The tables keep file order, because pycocotools' tie-breaking (equal scores, equal IoUs) depends on it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detval.coco.json_columns import (EXACT_INT, GroundTruthColumns, NotFast, read_detection_columns,
                              read_ground_truth_columns)
from detval.errors import DetvalError

# YOLOv5 utils.general.coco80_to_coco91_class(): model class index (0..79) -> COCO category id (1..90).
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)

# The 80 class names of YOLOv5's data/coco.yaml (and coco128.yaml), in class-index order.
COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")


@dataclass(frozen=True, eq=False)
class CocoGroundTruth:
    """A COCO instances file as arrays. Annotations are in file order.

    image_ids: [I] sorted unique image ids (int64; str for non-numeric YOLO stems; object, integers first,
        when both occur); "image index" means a position in this array. category_ids: [K] sorted unique int64; category_names: id -> name.
    ann_ids [N] int64; ann_image [N] int64 image index (-1: the image is not in `images`, never evaluated,
    as in pycocotools); ann_category [N] int64 category id; ann_boxes [N, 4] float64 xywh pixels;
    ann_area [N] float64 (the file's `area`, which drives COCO's small/medium/large, not the box area);
    ann_crowd [N] bool.
    """

    source: str
    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: dict[int, str]
    ann_ids: np.ndarray
    ann_image: np.ndarray
    ann_category: np.ndarray
    ann_boxes: np.ndarray
    ann_area: np.ndarray
    ann_crowd: np.ndarray

    def image_index(self, image_ids: Sequence[Any]) -> np.ndarray:
        """Positions of `image_ids` in self.image_ids, -1 for ids that are not there. -> int64 [len(image_ids)]."""
        lookup = dict(zip(self.image_ids.tolist(), range(len(self.image_ids))))
        try:
            return np.fromiter((lookup.get(i, -1) for i in image_ids), np.int64, count=len(image_ids))
        except TypeError as e:  # an unhashable id such as a list
            raise DetvalError(f"{self.source}: image ids must be numbers or strings ({e})") from None


@dataclass(frozen=True, eq=False)
class CocoDetections:
    """A COCO results list as arrays, in file order (pycocotools' loadRes numbers detections by this order).

    image_index [N] int64 (into CocoGroundTruth.image_ids); category_ids [N] int64; boxes [N, 4] float64 xywh
    pixels, used as given (loadRes clips nothing; it sets area = w * h, which the evaluator recomputes);
    scores [N] float64.
    """

    source: str
    image_index: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _check_file(path: str | Path, what: str) -> None:
    if not Path(path).is_file():
        raise DetvalError(f"{what} file not found: {path}")


def _read_json(path_or_obj: str | Path | Any, what: str) -> tuple[Any, str]:
    """(parsed object, name for error messages) from a path or an already parsed object."""
    if isinstance(path_or_obj, (str, Path)):
        path = Path(path_or_obj)
        _check_file(path, what)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f), str(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DetvalError(f"{path}: not valid JSON ({e})") from None
    return path_or_obj, f"<in-memory {what}>"


def _column(items: list, key: str, source: str, what: str, dtype, shape_tail: tuple = ()) -> np.ndarray:
    """items[i][key] for all i as an array; a clear error naming the first item that lacks it or is malformed."""
    try:
        values = [item[key] for item in items]
        arr = np.array(values, dtype=dtype)
        if arr.shape != (len(items), *shape_tail):
            raise ValueError(f"expected shape {(len(items), *shape_tail)}, got {arr.shape}")
        return arr
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or key not in item:
                raise DetvalError(f"{source}: {what}[{i}] has no '{key}'") from None
            try:
                v = np.array(item[key], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                v = None
            if v is None or v.shape != shape_tail:
                raise DetvalError(f"{source}: {what}[{i}]['{key}'] is malformed: {item[key]!r}") from None
        raise DetvalError(f"{source}: {what} column '{key}' is malformed ({e})") from None


def _image_id_array(ids: list, source: str) -> np.ndarray:
    """Sorted unique image ids as int64 or str arrays. A YOLO folder with both numeric and other stems gives
    both kinds; pycocotools cannot sort those (TypeError), detval puts the integers first (object array)."""
    is_int = [isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids]
    is_str = [isinstance(i, str) for i in ids]
    if not all(a or b for a, b in zip(is_int, is_str)):
        bad = next(i for i, a, b in zip(ids, is_int, is_str) if not (a or b))
        raise DetvalError(f"{source}: image ids must be integers or strings, not {bad!r}")
    if all(is_int):
        return np.unique(np.array(ids, dtype=np.int64))
    if all(is_str):
        return np.unique(np.array(ids, dtype=str))
    out = np.empty(len(set(ids)), dtype=object)
    out[:] = sorted(set(ids), key=lambda i: (isinstance(i, str), i))
    return out


def load_coco_gt(path_or_dict: str | Path | Mapping) -> CocoGroundTruth:
    """Read a COCO instances file (or its parsed dict). Needs images[].id, categories[].id and, per annotation,
    id, image_id, category_id, bbox (4 numbers) and area; iscrowd defaults to 0 (pycocotools would raise).

    Duplicate annotation ids are rejected: pycocotools indexes annotations by id and would silently evaluate
    one annotation twice. A GT `ignore` field is not read, because pycocotools overwrites it with iscrowd.
    A file is decoded against that schema first (coco/json_columns.py); the general reader handles the rest.
    """
    if isinstance(path_or_dict, (str, Path)):
        _check_file(path_or_dict, "ground-truth")
        try:
            return _ground_truth(read_ground_truth_columns(path_or_dict), str(path_or_dict))
        except NotFast:
            pass
    data, source = _read_json(path_or_dict, "ground-truth")
    return _ground_truth(_ground_truth_columns(data, source), source)


def _ground_truth_columns(data: Any, source: str) -> GroundTruthColumns:
    """GroundTruthColumns from a parsed instances dict, with an error naming the first malformed item."""
    if not isinstance(data, Mapping):
        raise DetvalError(f"{source}: a COCO ground-truth file must hold a JSON object, not {type(data).__name__}")
    for key in ("images", "categories"):
        if key not in data:
            raise DetvalError(f"{source}: no '{key}' list")
    images, cats, anns = data["images"], data["categories"], data.get("annotations") or []
    cat_ids = _column(cats, "id", source, "categories", np.int64)
    if not anns:
        return GroundTruthColumns(_column(images, "id", source, "images", object).tolist(), cat_ids,
                                  [c.get("name") for c in cats], np.zeros(0, np.int64), [], np.zeros(0, np.int64),
                                  np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool))
    return GroundTruthColumns(
        image_ids=_column(images, "id", source, "images", object).tolist(), category_ids=cat_ids,
        category_names=[c.get("name") for c in cats],
        ann_ids=_column(anns, "id", source, "annotations", np.int64),
        ann_image_ids=_column(anns, "image_id", source, "annotations", object).tolist(),
        ann_category=_column(anns, "category_id", source, "annotations", np.int64),
        ann_boxes=_column(anns, "bbox", source, "annotations", np.float64, (4,)),
        ann_area=_column(anns, "area", source, "annotations", np.float64),
        ann_crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool))


def _ground_truth(cols: GroundTruthColumns, source: str) -> CocoGroundTruth:
    uniq, counts = np.unique(cols.ann_ids, return_counts=True)
    if (counts > 1).any():
        raise DetvalError(f"{source}: duplicate annotation id {int(uniq[counts > 1][0])}")
    names = {int(c): str(c if n is None else n) for c, n in zip(cols.category_ids.tolist(), cols.category_names)}
    gt = CocoGroundTruth(
        source=source, image_ids=_image_id_array(cols.image_ids, source), category_ids=np.unique(cols.category_ids),
        category_names=names, ann_ids=cols.ann_ids, ann_image=np.zeros(len(cols.ann_ids), np.int64),
        ann_category=cols.ann_category, ann_boxes=cols.ann_boxes, ann_area=cols.ann_area, ann_crowd=cols.ann_crowd)
    gt.ann_image[:] = gt.image_index(cols.ann_image_ids)
    return gt


def load_coco_dets(path_or_list: str | Path | Sequence[Mapping], gt: CocoGroundTruth,
                   workers: int = 1) -> CocoDetections:
    """Read a COCO results list [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...].

    Every image_id must be one of gt's images (pycocotools' loadRes asserts the same); category ids must be
    integers, scores and boxes finite, widths and heights >= 0. An empty list gives no detections (pycocotools
    would crash on it). A file of numeric records is read straight into columns (coco/json_columns.py), in
    `workers` processes side by side.
    """
    if isinstance(path_or_list, (str, Path)):
        _check_file(path_or_list, "detections")
        try:
            cols = read_detection_columns(path_or_list, workers=workers)
        except NotFast:
            pass
        else:
            source = str(path_or_list)
            return _detections(source, _numeric_image_index(gt, cols.image_id, source), cols.category_id,
                               cols.boxes, cols.scores, gt)
    data, source = _read_json(path_or_list, "detections")
    if not isinstance(data, list):
        raise DetvalError(f"{source}: COCO detections must be a JSON list of objects, not {type(data).__name__}")
    if not data:
        return CocoDetections(source, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    img_ids = _column(data, "image_id", source, "detections", object).tolist()
    image_index = gt.image_index(img_ids)
    _check_known_images(source, image_index, img_ids, gt)
    return _detections(source, image_index, _column(data, "category_id", source, "detections", np.float64),
                       _column(data, "bbox", source, "detections", np.float64, (4,)),
                       _column(data, "score", source, "detections", np.float64), gt)


def _numeric_image_index(gt: CocoGroundTruth, ids: np.ndarray, source: str) -> np.ndarray:
    """Positions in gt.image_ids of float64 image ids [N] (an integral float equals the int, as in Python);
    fails naming unknown ids. -> int64 [N]."""
    if gt.image_ids.dtype != np.int64:
        index = gt.image_index(ids.tolist())
    else:
        index = _integer_lookup(gt.image_ids, ids)
    _check_known_images(source, index, ids, gt)
    return index


def _integer_lookup(sorted_ids: np.ndarray, values: np.ndarray, max_table: int = 1 << 24) -> np.ndarray:
    """Position of each float64 value [N] in the sorted unique int64 ids [I], -1 where it is not one of them
    (or not an integer). A table indexed by id when the ids span at most max_table (COCO's do: < 600k), a binary
    search otherwise. -> int64 [N]."""
    if not len(sorted_ids):
        return np.full(len(values), -1, np.int64)
    lo, hi = int(sorted_ids[0]), int(sorted_ids[-1])
    if hi - lo < max_table:
        table = np.full(hi - lo + 3, -1, np.int64)          # slots 0 and -1 catch everything outside the range
        table[sorted_ids - lo + 1] = np.arange(len(sorted_ids))
        whole = values == np.floor(values)                  # NaN compares unequal: not whole
        slot = np.clip(np.where(whole, values, lo - 1) - (lo - 1), 0, hi - lo + 2)
        return table[slot.astype(np.int64)]
    whole = (values == np.rint(values)) & (np.abs(values) < EXACT_INT)
    as_int = np.where(whole, values, 0).astype(np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, as_int), len(sorted_ids) - 1)
    return np.where(whole & (sorted_ids[pos] == as_int), pos, -1)


def _check_known_images(source: str, image_index: np.ndarray, img_ids, gt: CocoGroundTruth) -> None:
    unknown = np.flatnonzero(image_index < 0)
    if len(unknown):
        shown = sorted({_show_id(img_ids[i]) for i in unknown[:1000]})[:5]
        raise DetvalError(f"{source}: {len(unknown)} detections are on images that are not in {gt.source} "
                          f"(image_id {', '.join(shown)}{', ...' if len(shown) == 5 else ''})")


def _show_id(image_id) -> str:
    if isinstance(image_id, (float, np.floating)) and float(image_id).is_integer():
        return repr(int(image_id))
    return repr(image_id.item() if isinstance(image_id, np.generic) else image_id)


def _detections(source: str, image_index: np.ndarray, category: np.ndarray, boxes: np.ndarray,
                scores: np.ndarray, gt: CocoGroundTruth) -> CocoDetections:
    """CocoDetections after the checks every reader shares; category float64 [N] must hold integers."""
    def first(bad: np.ndarray) -> int | None:
        hits = np.flatnonzero(bad)
        return int(hits[0]) if len(hits) else None

    checks = (
        (~np.isfinite(scores), lambda i: f"score {scores[i]!r}: scores must be finite numbers"),
        (~np.isfinite(boxes).all(axis=1), lambda i: f"bbox {boxes[i].tolist()}: box values must be finite"),
        ((boxes[:, 2] < 0) | (boxes[:, 3] < 0),
         lambda i: f"a negative width or height: bbox {boxes[i].tolist()} (COCO boxes are [x, y, w, h])"),
        (category != np.rint(category), lambda i: f"category_id {category[i]!r} is not an integer"),
    )
    for bad, say in checks:
        i = first(bad)
        if i is not None:
            raise DetvalError(f"{source}: detections[{i}] has {say(i)}")
    return CocoDetections(source=source, image_index=image_index, category_ids=category.astype(np.int64),
                          boxes=boxes, scores=scores)


def image_id_from_stem(stem: str) -> int | str:
    """YOLOv5's COCO image id for a file stem: int(stem) if it is all digits, else the stem itself."""
    return int(stem) if stem.isnumeric() else stem


def coco_boxes_and_scores(boxes_xyxy, scores) -> tuple[np.ndarray, np.ndarray]:
    """Detections as YOLOv5 val.py save_one_json writes their numbers: (xywh float64 [N, 4], score float64 [N]).

    boxes_xyxy: [N, 4] (x1, y1, x2, y2) native pixels; scores: [N]; numpy arrays or CPU tensors. The arithmetic
    runs in the boxes' own dtype, so pass float32 (as YOLOv5's predn) for identical output: center =
    (x1 + x2) / 2, size = x2 - x1, corner = center - size / 2, then Python round(., 3); score round(., 5).
    """
    b = np.asarray(boxes_xyxy)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must be [N, 4], got {b.shape}")
    two = b.dtype.type(2)
    center = (b[:, :2] + b[:, 2:]) / two
    size = b[:, 2:] - b[:, :2]
    xywh = np.concatenate([center - size / two, size], axis=1)
    return round_like_python(xywh, 3), round_like_python(np.asarray(scores), 5)


def round_like_python(x: np.ndarray, decimals: int) -> np.ndarray:
    """[round(v, decimals) for v in x.tolist()] as float64, same shape.

    For float32 x, vectorized: v * 10 ** decimals is exact in float64 (24 + 17 bits at most for decimals <= 5),
    rint rounds that exact value half to even as Python's round does, and dividing the integer by 10 **
    decimals gives the double nearest the decimal, as Python's round returns it. Other dtypes: Python's round
    itself (np.round differs in the last bit for some values)."""
    if x.dtype == np.float32 and 0 <= decimals <= 5:
        scale = float(10 ** decimals)
        return np.rint(x.astype(np.float64) * scale) / scale
    return np.array([round(v, decimals) for v in x.ravel().tolist()], dtype=np.float64).reshape(x.shape)


def yolo_detections_to_coco(path_stem: str, boxes_xyxy, scores, classes, class_map: Sequence[int]) -> list[dict]:
    """One image's detections as YOLOv5 val.py save_one_json writes them (numbers as coco_boxes_and_scores;
    image_id from the stem; category_id = class_map[int(class)])."""
    boxes, rounded = coco_boxes_and_scores(boxes_xyxy, scores)
    image_id = image_id_from_stem(path_stem)
    return [
        {"image_id": image_id, "category_id": class_map[int(c)], "bbox": box, "score": s}
        for box, s, c in zip(boxes.tolist(), rounded.tolist(), np.asarray(classes).tolist())
    ]


def save_detections_json(path: str | Path, detections: list[dict]) -> None:
    """Write a results list the way val.py does (json.dump with default separators)."""
    with open(path, "w") as f:
        json.dump(detections, f)


def yolo_labels_to_coco_gt(records: Sequence, names: Sequence[str] | Mapping[int, str],
                           class_map: Sequence[int]) -> dict:
    """An in-memory COCO instances dict from YOLO labels (for COCO metrics on a YOLO-format dataset).

    records: detval.data.scan.ImageRecord-like objects with .path, .shape_hw = (h, w) and .labels float32
    [n, 5] = (class, cx, cy, w, h) normalized. Boxes become native-pixel xywh computed in float64, area = w * h,
    iscrowd 0, annotation ids from 1 in record order; image ids as yolo_detections_to_coco makes them.
    """
    names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    images, anns = [], []
    for rec in records:
        h, w = (int(v) for v in rec.shape_hw)
        image_id = image_id_from_stem(Path(rec.path).stem)
        images.append({"id": image_id, "file_name": Path(rec.path).name, "height": h, "width": w})
        lab = np.asarray(rec.labels, dtype=np.float64).reshape(-1, 5)
        bw, bh = lab[:, 3] * w, lab[:, 4] * h
        x, y = lab[:, 1] * w - bw / 2, lab[:, 2] * h - bh / 2
        for c, *box in zip(lab[:, 0].tolist(), x.tolist(), y.tolist(), bw.tolist(), bh.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": class_map[int(c)],
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": class_map[i], "name": n} for i, n in sorted(names.items())]
    return {"images": images, "annotations": anns, "categories": categories}


def per_class_by_name(per_class_ap: dict[int, float], names: dict[int, str]) -> dict[str, float]:
    """{category name: AP}; a name shared by several ids gets ' (id)' appended so that none is lost."""
    counts: dict[str, int] = {}
    for cat in per_class_ap:
        counts[names.get(cat, str(cat))] = counts.get(names.get(cat, str(cat)), 0) + 1
    out = {}
    for cat, ap in per_class_ap.items():
        name = names.get(cat, str(cat))
        out[name if counts[name] == 1 else f"{name} ({cat})"] = ap
    return out
