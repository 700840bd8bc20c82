"""A COCO instances.json plus its images folder as validation input, in the YOLO form the rest of detval reads."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from PIL import Image

from detval.data.scan import ImageRecord, exif_size_hw
from detval.errors import DetvalError
from detval.results import Excluded


@dataclass(frozen=True)
class CocoImageSet:
    """records: one per image found, sorted by path (as YOLOv5 sorts its image files); names[i] and
    class_map[i] are the name and COCO category id of class i (categories sorted by id); excluded: images the
    JSON lists that are not in the folder."""

    records: list[ImageRecord]
    names: list[str]
    class_map: list[int]
    excluded: list[Excluded] = field(default_factory=list)


def records_from_coco_json(instances_json: str | Path, images_dir: str | Path) -> CocoImageSet:
    """Read a COCO instances file as YOLO-style records.

    Labels: float32 [n, 5] = (class, cx, cy, w, h), normalized by the image's width/height from the JSON,
    in annotation file order. Crowd annotations are left out, as are boxes with no width or height (what
    YOLOv5's JSON2YOLO converter does); COCO metrics still see the crowds through the JSON itself.
    """
    path, images_dir = Path(instances_json), Path(images_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DetvalError(f"COCO annotations not found: {path}") from None
    except json.JSONDecodeError as e:
        raise DetvalError(f"{path}: not valid JSON ({e})") from None
    if not images_dir.is_dir():
        raise DetvalError(f"image folder not found: {images_dir}")
    # Resolved, as a data yaml's split folders are (v7.0's check_dataset): the same images reached through a
    # symlink get the same record paths, whichever way they are named.
    images_dir = images_dir.resolve()
    for key in ("images", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise DetvalError(f"{path}: no '{key}' list")
    try:
        cats = sorted(data["categories"], key=lambda c: c["id"])
        class_of = {c["id"]: i for i, c in enumerate(cats)}
        labels: dict = {}
        for ann in data.get("annotations", []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0 or ann["category_id"] not in class_of:
                continue
            labels.setdefault(ann["image_id"], []).append((class_of[ann["category_id"]], x + w / 2, y + h / 2, w, h))
        records, excluded = [], []
        for img in data["images"]:
            file = images_dir / img["file_name"]
            if not file.is_file():
                excluded.append(Excluded(str(file), f"listed in {path.name} but not in {images_dir}"))
                continue
            W, H = int(img["width"]), int(img["height"])
            lab = np.array(labels.get(img["id"], []), dtype=np.float64).reshape(-1, 5)
            lab[:, 1:] /= np.array([W, H, W, H], dtype=np.float64)
            records.append(ImageRecord(path=file, shape_hw=(H, W), labels=lab.astype(np.float32)))
    except (KeyError, TypeError, ValueError) as e:
        raise DetvalError(f"{path}: malformed COCO annotations ({type(e).__name__}: {e})") from None
    records.sort(key=lambda r: str(r.path))
    return CocoImageSet(records=records, names=[str(c.get("name", c["id"])) for c in cats],
                        class_map=[int(c["id"]) for c in cats], excluded=excluded)


def is_coco_json(data: str | Path) -> bool:
    """True when --data names a COCO instances file rather than a data.yaml."""
    return str(data).lower().endswith(".json")


@dataclass(frozen=True)
class CocoSplit:
    """What data.prepare takes from a data.yaml split, read from a COCO instances file and its image folder.

    records: usable images sorted by path (YOLOv5's file order), labels float32 [n, 5] (cls, cx, cy, w, h)
    normalized; names[i] / class_map[i]: name and COCO category id of class i (categories sorted by id)."""

    records: list[ImageRecord]
    excluded: list[Excluded]
    names: list[str]
    class_map: list[int]
    scan_summary: str


def read_coco_json_split(instances_json: str | Path, images_dir: str | Path | None) -> CocoSplit:
    """Read --data instances.json --images DIR. Each image's header is read (not decoded) and must be readable
    and of the JSON's size, else it is excluded: the labels are normalized by the JSON's size, the model sees the
    file's."""
    if not images_dir:
        raise DetvalError(f"--data {instances_json} is a COCO JSON: --images DIR (its image folder) is needed")
    images = records_from_coco_json(instances_json, images_dir)
    records, excluded = [], list(images.excluded)
    for rec in images.records:
        try:
            with Image.open(rec.path) as im:
                shape_hw = exif_size_hw(im)
        except Exception as e:  # noqa: BLE001 - any unreadable file is an excluded image, as in the YAML scan
            excluded.append(Excluded(str(rec.path), f"unreadable image ({type(e).__name__}: {e})"))
            continue
        if tuple(shape_hw) != tuple(rec.shape_hw):
            (h, w), (jh, jw) = shape_hw, rec.shape_hw
            excluded.append(Excluded(str(rec.path), f"image is {w}x{h} (w x h), {Path(instances_json).name} "
                                                    f"says {jw}x{jh}"))
            continue
        records.append(rec)
    if not records:
        why = f": {excluded[0].reason}" if excluded else ""
        raise DetvalError(f"{instances_json}: no usable image in {images_dir}{why}")
    n_labelled = sum(1 for r in records if len(r.labels))
    summary = (f"val: Scanning {instances_json} ({images_dir})... {n_labelled} images, "
               f"{len(records) - n_labelled} backgrounds, {len(excluded)} missing or corrupt")
    return CocoSplit(records, excluded, images.names, images.class_map, summary)
