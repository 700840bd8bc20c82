"""The validation run: the only place that ties data, model, ops, metrics, dist and report together.

    prepare (files -> records -> batch plan, model)  ->  run_batches (this rank's whole batches)
    ->  gather (per-image stats to rank 0, global image order)  ->  summarize (metrics)  ->  report
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from detval import dist
from detval.cache.images import open_image_cache
from detval.coco_step import is_coco_json, read_coco_json_split
from detval.config import ValConfig
from detval.data import (BatchPlan, DataError, ImageRecord, ValDataset, batch_indices, collate, list_images,
                         load_data_config, rect_batch_plan, scan_images, square_batch_plan)
from detval.data.agreement import agreement_digest
from detval.metrics.image_stats import image_stats
from detval.metrics.summary import DetectionMetrics, detection_metrics
from detval.model import LoadedModel, check_nc, load_model
from detval.cache.raw_outputs import STORE_CONF, BatchRaw, RawCache
from detval.ops.nms import NmsConfig, nms_candidates, nms_select
from detval.results import ClassResult, Excluded, ValResult


@dataclass
class Prepared:
    """Everything each rank knows before the first batch. records are in batch-plan order."""

    records: list
    excluded: list[Excluded]
    names: list[str]
    nc: int
    plan: BatchPlan
    imgsz: int
    scan_summary: str


@dataclass
class RankOutput:
    """One rank's per-image results, flat: image i owns det_counts[i] detection rows and label_counts[i] label rows.

    image_ids: int64 [n] plan-order indices; det: boxes f32 [D, 4] xyxy original pixels, conf f32 [D], cls f32 [D],
    correct bool [D, 10]; labels: cls f32 [L]; confusion: [nc + 1, nc + 1]; seconds: per stage.
    """

    image_ids: torch.Tensor
    det_counts: torch.Tensor
    det: dict[str, torch.Tensor]
    label_counts: torch.Tensor
    labels: dict[str, torch.Tensor]
    confusion: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    batches: int = 0


PREFETCH = 2  # batches each DataLoader worker loads ahead (torch's default prefetch_factor)


def make_divisible(x: int, divisor: int) -> int:
    return int(np.ceil(x / divisor) * divisor)


def prepare(cfg: ValConfig, stride: int) -> Prepared:
    """Read the dataset up front: every bad file is found here, before any inference."""
    if is_coco_json(cfg.data):
        split = read_coco_json_split(cfg.data, cfg.images)
        records, excluded, names, summary = list(split.records), list(split.excluded), split.names, split.scan_summary
    else:
        data = load_data_config(cfg.data)
        split_name = "val" if cfg.task in ("val", "speed") else cfg.task
        sources = getattr(data, split_name)
        if not sources:
            raise DataError(f"{cfg.data}: no '{split_name}' split")
        scan = scan_images(list_images(sources), data.nc)
        records, excluded, names = list(scan.records), list(scan.excluded), data.names
        summary = (f"{split_name}: Scanning {', '.join(str(s) for s in sources)}... {scan.n_found_labels} images, "
                   f"{scan.n_missing + scan.n_empty} backgrounds, {scan.n_corrupt} corrupt")
    if cfg.single_cls:
        records = [r.__class__(r.path, r.shape_hw, _single_class(r.labels)) for r in records]
    imgsz = make_divisible(cfg.imgsz, stride)
    shapes = np.array([r.shape_hw for r in records])
    if cfg.task == "speed":
        plan = square_batch_plan(len(records), cfg.batch_size, imgsz)
    else:
        plan = rect_batch_plan(shapes, cfg.batch_size, imgsz, stride, pad=0.5)
    records = [records[i] for i in plan.order]
    return Prepared(records, excluded, list(names), len(names), plan, imgsz, summary)


def plan_digest(prep: Prepared) -> str:
    """What every rank must agree on: data.agreement_digest of the records and plan."""
    return agreement_digest(prep.records, prep.plan)


def prepare_from_raw(meta: dict) -> Prepared:
    """The dataset side of a run, as a raw-output cache's manifest recorded it (no image is read)."""
    records = [ImageRecord(Path(p), tuple(hw), np.zeros((0, 5), np.float32))
               for p, hw in zip(meta["images"], meta["shapes_hw"])]
    plan = BatchPlan(np.arange(len(records)), np.array(meta["batch_of"]), np.array(meta["batch_shapes"]))
    excluded = [Excluded(f, r) for f, r in meta["excluded"]]
    return Prepared(records, excluded, meta["names"], meta["nc"], plan, meta["imgsz"], meta["scan_summary"])


def _single_class(labels: np.ndarray) -> np.ndarray:
    labels = labels.copy()
    labels[:, 0] = 0
    return labels


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer reads what it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StatsAccumulator:
    """Per-image matching for one rank (detectron2's reset/process/evaluate contract, as add/output).

    Fed NMS candidates (live from the model, or from the raw-output cache: the same code path), it selects the
    detections at the run's thresholds and matches them to the labels.
    """

    def __init__(self, cfg: ValConfig, nc: int) -> None:
        self.cfg = cfg
        self.nms_cfg = NmsConfig(cfg.conf_thres, cfg.iou_thres, cfg.max_det, agnostic=cfg.single_cls)
        self.nc_metric = 1 if cfg.single_cls else nc
        self.confusion = np.zeros((self.nc_metric + 1, self.nc_metric + 1))
        self.ids: list[int] = []
        self.stats: list = []
        self.seconds = {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
        self.batches = 0

    def select(self, cands: list[torch.Tensor]) -> list[torch.Tensor]:
        """Candidates (at a threshold <= the run's) -> detections. Filtering first is exact: see ops/nms.py."""
        c = self.nms_cfg.conf_thres
        return [nms_select(x[x[:, 4] > c], self.nms_cfg) for x in cands]

    def add(self, image_ids, dets: list[torch.Tensor], labels: list[torch.Tensor], shapes: list) -> None:
        """dets: per image [N, 6] in input pixels; labels: per image [M, 5] (cls, cx, cy, w, h) in input pixels."""
        if self.cfg.single_cls:  # cached labels keep their classes; a fresh single-class run has zeroed them
            labels = [torch.cat((torch.zeros_like(lb[:, :1]), lb[:, 1:]), 1) for lb in labels]
        for i, det, lb, (orig_hw, ratio_pad) in zip(image_ids, dets, labels, shapes):
            self.ids.append(int(i))
            self.stats.append(image_stats(det, lb, orig_hw, ratio_pad, self.cfg.single_cls, self.confusion))
        self.batches += 1

    def output(self) -> RankOutput:
        st = self.stats
        return RankOutput(
            image_ids=torch.tensor(self.ids, dtype=torch.int64),
            det_counts=torch.tensor([s.conf.shape[0] for s in st], dtype=torch.int64),
            det={
                "boxes": _cat([s.boxes.float() for s in st], (0, 4), torch.float32),
                "conf": _cat([s.conf.float() for s in st], (0,), torch.float32),
                "cls": _cat([s.cls.float() for s in st], (0,), torch.float32),
                "correct": _cat([s.correct for s in st], (0, 10), torch.bool),
            },
            label_counts=torch.tensor([s.target_cls.shape[0] for s in st], dtype=torch.int64),
            labels={"cls": _cat([s.target_cls.float() for s in st], (0,), torch.float32)},
            confusion=self.confusion, seconds=self.seconds, batches=self.batches,
        )


def run_batches(prep: Prepared, model: torch.nn.Module, batch_ids, device: torch.device, cfg: ValConfig,
                acc: StatsAccumulator, raw_cache: RawCache | None = None, on_batch=None, world_size: int = 1) -> None:
    """Run the model over the given whole batches (global batch ids) into acc; with raw_cache, store each batch."""
    cand_conf = min(cfg.conf_thres, STORE_CONF) if raw_cache is not None else cfg.conf_thres
    dataset = ValDataset(prep.records, prep.plan, prep.imgsz, image_cache=open_image_cache(cfg.cache, cfg.cache_dir))
    workers = loader_workers(cfg, world_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_BatchSampler(prep.plan, batch_ids),
                                         num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                                         prefetch_factor=PREFETCH if workers else None)
    seconds = acc.seconds
    with torch.inference_mode():
        for batch in loader:
            t0 = time.perf_counter()
            im = batch.images.to(device, non_blocking=True)
            im = im.half() if cfg.half else im.float()
            im /= 255
            targets = batch.targets.to(device)
            _, _, height, width = im.shape
            sync(device)
            t1 = time.perf_counter()
            pred = model(im)
            sync(device)
            t2 = time.perf_counter()
            cands = nms_candidates(pred, cand_conf)
            dets = acc.select(cands)
            sync(device)
            t3 = time.perf_counter()
            seconds["preprocess"] += t1 - t0
            seconds["inference"] += t2 - t1
            seconds["nms"] += t3 - t2
            labels = image_labels(targets, len(dets), height, width)
            acc.add(batch.indices, dets, labels, batch.shapes)
            if raw_cache is not None:
                raw_cache.write(int(prep.plan.batch_of[batch.indices[0]]),
                                _batch_raw(batch.indices, cands, labels, batch.shapes))
            if on_batch is not None:
                on_batch(len(dets))


def image_labels(targets: torch.Tensor, n_images: int, height: int, width: int) -> list[torch.Tensor]:
    """A collated batch's targets [M, 6] (image in batch, cls, cx, cy, w, h normalized to the input) -> per image
    [m, 5] (cls, cx, cy, w, h) in input pixels, as val.py scales them."""
    scaled = torch.cat((targets[:, :2], targets[:, 2:] * torch.tensor((width, height, width, height),
                                                                         device=targets.device)), 1)
    return [scaled[scaled[:, 0] == k, 1:] for k in range(n_images)]


def loader_workers(cfg: ValConfig, world_size: int = 1) -> int:
    """DataLoader worker processes for one rank, as YOLOv5 counts them (at most --workers, the cores shared by the
    ranks, none for batch 1), and none with a RAM image cache (a worker would fill its own copy, lost when it ends).
    On a small CPU machine `--workers 0` can be faster: the workers compete with the model's threads."""
    if cfg.batch_size == 1 or cfg.cache == "ram":
        return 0
    return min(cfg.workers, max(1, (os.cpu_count() or 1) // world_size))


def add_cached_batches(raw_cache: RawCache, batch_ids, acc: StatsAccumulator, on_batch=None) -> None:
    """Feed stored batches into acc without the model or the images."""
    for b in batch_ids:
        raw = raw_cache.read(b)
        cands = list(torch.split(raw.cands, raw.cand_counts.tolist()))
        labels = list(torch.split(raw.labels, raw.label_counts.tolist()))
        t0 = time.perf_counter()
        dets = acc.select(cands)
        acc.seconds["nms"] += time.perf_counter() - t0
        acc.add(raw.image_ids.tolist(), dets, labels, raw.shapes)
        if on_batch is not None:
            on_batch(len(dets))


def _batch_raw(image_ids, cands: list[torch.Tensor], labels: list[torch.Tensor], shapes: list) -> BatchRaw:
    return BatchRaw(
        image_ids=torch.as_tensor(list(image_ids), dtype=torch.int64),
        cand_counts=torch.tensor([c.shape[0] for c in cands], dtype=torch.int64),
        cands=_cat([c.float().cpu() for c in cands], (0, 6), torch.float32),
        label_counts=torch.tensor([lb.shape[0] for lb in labels], dtype=torch.int64),
        labels=_cat([lb.float().cpu() for lb in labels], (0, 5), torch.float32),
        shapes=[_plain(s) for s in shapes],
    )


def _plain(shape) -> tuple:
    """((h0, w0), ((gh, gw), (pw, ph))) as plain python numbers, so the cache loads with weights_only."""
    (h0, w0), ((gh, gw), (pw, ph)) = shape
    return (int(h0), int(w0)), ((float(gh), float(gw)), (float(pw), float(ph)))


def _cat(parts: list[torch.Tensor], empty_shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts, 0) if parts else torch.zeros(empty_shape, dtype=dtype)


class _BatchSampler:
    """Yields the image indices of each batch id as the schedule hands them out (lazily, for dynamic claims)."""

    def __init__(self, plan, batch_ids) -> None:
        self.plan, self.batch_ids = plan, batch_ids

    def __iter__(self):
        for b in self.batch_ids:
            yield batch_indices(self.plan, [b])[0]


def merged_stats(out: RankOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(correct, conf, pred_cls, target_cls) as numpy, concatenated in image order as v7.0 concatenates them."""
    return (out.det["correct"].numpy(), out.det["conf"].numpy(), out.det["cls"].numpy(),
            out.labels["cls"].numpy())


def summarize(prep: Prepared, out: RankOutput, cfg: ValConfig) -> tuple[ValResult, DetectionMetrics]:
    """All images' stats in plan order -> ValResult (metrics, per-class rows, speed)."""
    names = ["item"] if cfg.single_cls else list(prep.names)
    nc = len(names)
    correct, conf, pred_cls, target_cls = merged_stats(out)
    m = detection_metrics(correct, conf, pred_cls, target_cls, nc)
    seen = int(out.image_ids.numel())
    per_class = []
    if m.per_class is not None:
        pc = m.per_class
        for i, c in enumerate(pc.classes):
            per_class.append(ClassResult(int(c), names[c], seen, int(m.nt[c]), float(pc.p[i]), float(pc.r[i]),
                                         float(pc.ap[i, 0]), float(pc.ap[i].mean())))
    speed = {k: v / max(seen, 1) * 1e3 for k, v in out.seconds.items()}
    result = ValResult(images=seen, instances=int(m.nt.sum()), p=m.mp, r=m.mr, map50=m.map50, map=m.map,
                       maps=[float(x) for x in m.maps], per_class=per_class, speed_ms=speed, names=names,
                       excluded=prep.excluded)
    return result, m
