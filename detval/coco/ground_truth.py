"""The COCO ground truth a --save-json run evaluates against, and how the run's images and classes map onto it.

Which ground truth (as YOLOv5 v7.0 val.py where it has one):
- `--data instances.json --images DIR`: that file, image ids from it (matched by file name);
- data.yaml with `<path>/annotations/instances_val2017.json`: that file (val.py's anno_json), image ids from
  numeric file stems as val.py's save_one_json;
- otherwise the run's own YOLO labels, converted to COCO in memory (val.py has no such path: it fails there).
Only the run's images are evaluated (val.py restricts imgIds only for coco/val2017.txt; it evaluates every
image of the annotation file otherwise, which on a subset counts the other images' objects as missed).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detval.coco.evaluate import CocoParams
from detval.coco.format import (COCO80_TO_91, CocoGroundTruth, image_id_from_stem,
                                load_coco_gt, yolo_labels_to_coco_gt)
from detval.config import COCO_BACKENDS
from detval.data.coco_dataset import is_coco_json, read_coco_json_split
from detval.data.dataset_yaml import load_data_config
from detval.data.prepare import single_class
from detval.data.scan import ImageRecord, scan_images
from detval.errors import DetvalError

ANNOTATIONS_FILE = Path("annotations") / "instances_val2017.json"


@dataclass(frozen=True, eq=False)
class CocoGt:
    """The run's COCO ground truth and how the run's images and classes map onto it.

    gt: the instances as arrays; source: what a reference backend reads (instances path, or the in-memory dict);
    record_ids: COCO image id of records[i] (the run's records, plan order), as the predictions JSON writes it;
    record_index: int64 [n_records] position of records[i] in gt.image_ids, -1 if gt lacks the image (its
    detections are written but not evaluated); class_map[c]: category id of class c; names: category id ->
    the name results.json uses; backend: detval, pycocotools or faster-coco-eval; note: what was chosen, said
    once with the summary."""

    gt: CocoGroundTruth
    source: str | dict
    record_ids: list
    record_index: np.ndarray
    class_map: list[int]
    names: dict[int, str]
    backend: str
    note: str = ""

    @property
    def params(self) -> CocoParams:
        return CocoParams.for_gt(self.gt)


def coco_class_map(names: Sequence[str], val_sources: Sequence[str | Path] = ()) -> tuple[list[int], bool]:
    """(class index -> category id, is COCO). COCO's 91-id map when a val source ends with coco/val2017.txt
    (val.py's is_coco); else the identity, as val.py's list(range(1000)): coco128 with COCO's 80 names gets class
    indices as category ids, as val.py writes them."""
    if any(str(s).replace(os.sep, "/").endswith("coco/val2017.txt") for s in val_sources):
        return list(COCO80_TO_91), True
    return list(range(max(1000, len(names)))), False


def coco_ground_truth(data: str | Path, images: str | Path | None, records: Sequence[ImageRecord],
                      names: Sequence[str], single_cls: bool = False, backend: str = "detval") -> CocoGt:
    """The ground truth a --save-json run evaluates against (see the module docstring for the choice).

    data, images: cfg.data / cfg.images; records: the run's images in plan order (with labels: the in-memory
    GT is built from them); names: the dataset's class names. With single_cls the GT is the records' labels
    (all class 0) as one category, class_map[0]'s. Fails here, before any inference, on a bad annotation
    file, on two images that would share a COCO image id, or on a backend that is not installed."""
    _check_backend(backend)
    records = list(records)
    id_note = ""
    if is_coco_json(data):
        gt_file = load_coco_gt(data)
        class_map = [int(c) for c in gt_file.category_ids]
        by_name = _json_image_ids(data, images)
        record_ids = [by_name.get(_key(r.path), image_id_from_stem(Path(r.path).stem)) for r in records]
        anno = Path(data)
    else:
        data_cfg = load_data_config(data)
        class_map, is_coco = coco_class_map(names, data_cfg.val or [])
        if is_coco:
            id_note = "; category ids: COCO's 1..90 (coco/val2017.txt)"
        record_ids = [image_id_from_stem(Path(r.path).stem) for r in records]
        anno = data_cfg.root / ANNOTATIONS_FILE
        gt_file = load_coco_gt(anno) if anno.is_file() and not single_cls else None
    _check_unique_ids(records, record_ids)

    cat_names = {c: str(n) for c, n in zip(class_map, names)}
    if single_cls:  # labels zeroed here too: records from a raw-output cache keep their classes
        one = single_class(records)
        gt_source = yolo_labels_to_coco_gt(_by_path(one), ["item"], class_map)
        gt, source, cat_names = load_coco_gt(gt_source), gt_source, {class_map[0]: "item"}
        note = f"COCO ground truth: the run's labels, one class (category id {class_map[0]})"
    elif gt_file is not None:
        gt, source = gt_file, str(anno)
        in_file = set(gt.category_ids.tolist())
        cat_names = {**gt.category_names, **{c: n for c, n in cat_names.items() if c in in_file}}
        note = f"COCO ground truth: {anno}"
    else:
        gt_source = yolo_labels_to_coco_gt(_by_path(records), list(names), class_map)
        gt, source = load_coco_gt(gt_source), gt_source
        note = f"COCO ground truth: the run's YOLO labels (no {anno})"
    note += id_note
    record_index = gt.image_index(record_ids)
    missing = int((record_index < 0).sum())
    if missing:
        note += f"; {missing} of the run's images are not in it and are left out of the COCO metrics"
    return CocoGt(gt, source, record_ids, record_index, class_map, cat_names, backend, note)


def records_with_labels(data: str | Path, images: str | Path | None, records: Sequence[ImageRecord],
                        nc: int) -> list[ImageRecord]:
    """records (e.g. a raw-output cache's manifest, which has no labels) with their labels read again from the
    dataset, same order: the in-memory COCO GT is built from labels. Fails if an image is no longer there."""
    if is_coco_json(data):
        found = read_coco_json_split(data, images).records
    else:
        found = scan_images([Path(r.path) for r in records], nc).records
    labels = {str(r.path): r.labels for r in found}
    gone = [str(r.path) for r in records if str(r.path) not in labels]
    if gone:
        raise DetvalError(f"--save-json: {len(gone)} images of the run are no longer usable in {data} "
                          f"(first: {gone[0]})")
    return [ImageRecord(r.path, r.shape_hw, labels[str(r.path)]) for r in records]


def _check_backend(backend: str) -> None:
    if backend not in COCO_BACKENDS:
        raise DetvalError(f"unknown --coco-backend {backend!r}; choose from {', '.join(COCO_BACKENDS)}")
    module = {"pycocotools": "pycocotools.cocoeval", "faster-coco-eval": "faster_coco_eval"}.get(backend)
    if module:
        try:
            __import__(module)
        except ImportError as e:
            raise DetvalError(f"--coco-backend {backend} needs its package ({e}); pip install {backend}") from None


def _json_image_ids(instances_json: str | Path, images_dir: str | Path | None) -> dict[str, object]:
    """Image file (as _key) -> image id, for images_dir / file_name as records_from_coco_json builds the paths."""
    data = json.loads(Path(instances_json).read_text())
    folder = Path(images_dir or ".")
    return {_key(folder / img["file_name"]): img["id"] for img in data.get("images", [])}


def _key(path: str | Path) -> str:
    # resolved, so that a record path spelled differently (relative, '..') still finds its image id
    return str(Path(path).resolve())


def _check_unique_ids(records: Sequence[ImageRecord], record_ids: list) -> None:
    seen: dict = {}
    for rec, i in zip(records, record_ids):
        if i in seen:
            raise DetvalError(f"--save-json: {seen[i]} and {rec.path} would both be COCO image id {i!r} "
                              "(ids come from file stems); rename one, or run without --save-json")
        seen[i] = rec.path


def _by_path(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Records in file order, so that the in-memory GT (and its annotation ids) does not depend on the batch plan."""
    return sorted(records, key=lambda r: str(r.path))
