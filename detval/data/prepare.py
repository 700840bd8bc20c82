"""A run's dataset side, read up front: files -> records (every bad file found here, before any inference) ->
batch plan. The run modes that change the data are applied here, once: --single-cls zeroes every label's class,
--task speed takes square batches."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from detval.config import ValConfig
from detval.data.agreement import agreement_digest
from detval.data.coco_dataset import is_coco_json, read_coco_json_split
from detval.data.dataset_yaml import DataError, list_images, load_data_config
from detval.data.letterbox import resized_hw
from detval.data.plan import BatchPlan, rect_batch_plan, square_batch_plan
from detval.data.scan import ImageRecord, scan_images
from detval.results import Excluded


@dataclass(frozen=True)
class Prepared:
    """Everything each rank knows before the first batch. records are in batch-plan order (labels of class 0 with
    --single-cls); names: the dataset's class names (COCO category ids come from them); metric_names: the classes
    the metrics count (["item"] with --single-cls)."""

    records: list[ImageRecord]
    excluded: list[Excluded]
    names: list[str]
    plan: BatchPlan
    imgsz: int
    scan_summary: str
    single_cls: bool = False
    warnings: tuple[str, ...] = ()  # the scan's warnings, as val.py prints them (after the scan line)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def metric_names(self) -> list[str]:
        return ["item"] if self.single_cls else list(self.names)


def make_divisible(x: int, divisor: int) -> int:
    return int(np.ceil(x / divisor) * divisor)


def prepare(cfg: ValConfig, stride: int, rect: bool = True) -> Prepared:
    """Read cfg.data's split (a data.yaml, or a COCO instances.json with cfg.images) and plan its batches: rect
    (aspect-ratio) batches unless rect is False (val.py's choice for exported weights) or --task speed."""
    records, excluded, names, summary, warnings = _read_split(cfg)
    records = single_class(records) if cfg.single_cls else records
    imgsz = make_divisible(cfg.imgsz, stride)
    records, too_thin = split_too_thin(records, imgsz)
    if cfg.task == "speed" or not rect:
        plan = square_batch_plan(len(records), cfg.batch_size, imgsz)
    else:
        plan = rect_batch_plan(np.array([r.shape_hw for r in records]), cfg.batch_size, imgsz, stride, pad=0.5)
    records = [records[i] for i in plan.order]
    return Prepared(records, excluded + too_thin, list(names), plan, imgsz, summary, cfg.single_cls, warnings)


def split_too_thin(records: list[ImageRecord], imgsz: int) -> tuple[list[ImageRecord], list[Excluded]]:
    """(records that load_image can resize, exclusions of those it would resize to a side of 0 pixels). v7.0 lets
    such an image through its scan (both sides >= 10 px) and then fails in a DataLoader worker; found here, before
    any inference, it is left out with the others."""
    kept, thin = [], []
    for r in records:
        h, w = resized_hw(r.shape_hw, imgsz)
        if min(h, w) < 1:
            thin.append(Excluded(str(r.path), f"{r.path}: image {r.shape_hw[1]}x{r.shape_hw[0]} would be resized to "
                                              f"{w}x{h} at --imgsz {imgsz}, too thin to validate"))
        else:
            kept.append(r)
    return kept, thin


def _read_split(cfg: ValConfig) -> tuple[list[ImageRecord], list[Excluded], list[str], str, tuple[str, ...]]:
    if is_coco_json(cfg.data):
        split = read_coco_json_split(cfg.data, cfg.images)
        return list(split.records), list(split.excluded), split.names, split.scan_summary, ()
    data = load_data_config(cfg.data)
    split_name = "val" if cfg.task in ("val", "speed") else cfg.task
    sources = getattr(data, split_name)
    if not sources:
        raise DataError(f"{cfg.data}: no '{split_name}' split")
    scan = scan_images(list_images(sources), data.nc)
    summary = (f"{split_name}: Scanning {', '.join(str(s) for s in sources)}... {scan.n_found_labels} images, "
               f"{scan.n_missing + scan.n_empty} backgrounds, {scan.n_corrupt} corrupt")
    warnings = tuple(f"{split_name}: WARNING ⚠️ {w}" for w in scan.warnings)
    return list(scan.records), list(scan.excluded), data.names, summary, warnings


def single_class(records: list[ImageRecord]) -> list[ImageRecord]:
    """--single-cls: every label of class 0 (val.py trains and validates such a run as one class)."""
    return [replace(r, labels=_class_zero(r.labels)) for r in records]


def single_class_labels(labels):
    """The same for one batch's label tensor [M, 5] (cls first), as a raw-output cache stored it."""
    out = labels.clone()
    out[:, 0] = 0
    return out


def _class_zero(labels: np.ndarray) -> np.ndarray:
    labels = np.array(labels, dtype=np.float32).reshape(-1, 5)
    labels[:, 0] = 0
    return labels


def plan_digest(prep: Prepared) -> str:
    """What every rank must agree on before batch ids mean the same images everywhere (see data/agreement.py:
    paths relative to the dataset folder, so nodes may mount their copies anywhere)."""
    return agreement_digest(prep.records, prep.plan)
