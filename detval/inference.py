"""The batch step: images -> model -> NMS, timed per stage, for live batches (DataLoader) and cached ones (a
raw-output cache replayed without the model). Both give the same `BatchOutput`, so everything after it is one path.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from detval.cache.raw_outputs import BatchRaw, RawCache
from detval.data.dataset import ValDataset, batch_indices, collate
from detval.data.prepare import Prepared, single_class_labels
from detval.evaluation.records import ImageBatch, cat_rows
from detval.metrics.image_stats import native_pixels
from detval.ops.nms import NmsConfig, nms_candidates, nms_select, with_label_rows

PREFETCH = 2  # batches each DataLoader worker loads ahead (torch's default prefetch_factor)


@dataclass
class StageTimes:
    """Seconds spent per stage (preprocess, inference, nms, ...), batches run and images evaluated, on this rank."""

    seconds: dict[str, float] = field(default_factory=lambda: {"preprocess": 0.0, "inference": 0.0, "nms": 0.0})
    batches: int = 0
    images: int = 0

    def add(self, stage: str, s: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + s


@dataclass(frozen=True)
class BatchOutput:
    """One batch after NMS. image_ids: plan-order indices; cands[k]: image k's NMS candidates [K, 6] (x1, y1, x2,
    y2, conf, cls) input pixels at the store threshold; dets[k]: its detections at the run's thresholds, same
    layout; labels[k]: [M, 5] (cls, cx, cy, w, h) input pixels; shapes[k]: ((h0, w0), ((gain_h, gain_w),
    (pad_w, pad_h)))."""

    image_ids: list[int]
    cands: list[torch.Tensor]
    dets: list[torch.Tensor]
    labels: list[torch.Tensor]
    shapes: list

    def native(self) -> ImageBatch:
        """The batch in original-image pixels, as the evaluators take it."""
        pairs = [native_pixels(d, lb, hw, rp) for d, lb, (hw, rp) in zip(self.dets, self.labels, self.shapes)]
        return ImageBatch(self.image_ids, [p[0] for p in pairs], [p[1] for p in pairs])

    def raw(self) -> BatchRaw:
        """What the raw-output cache stores of it."""
        return BatchRaw(
            image_ids=torch.as_tensor(list(self.image_ids), dtype=torch.int64),
            cand_counts=torch.tensor([c.shape[0] for c in self.cands], dtype=torch.int64),
            cands=cat_rows([c.float().cpu() for c in self.cands], (0, 6), torch.float32),
            label_counts=torch.tensor([lb.shape[0] for lb in self.labels], dtype=torch.int64),
            labels=cat_rows([lb.float().cpu() for lb in self.labels], (0, 5), torch.float32),
            shapes=[_plain(s) for s in self.shapes])


def select(cands: list[torch.Tensor], nms: NmsConfig, single_cls: bool,
           hybrid_labels: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Candidates (at a threshold <= the run's) -> detections. Filtering first is exact: see ops/nms.py. With
    --single-cls every detection is class 0, as val.py sets it after NMS. hybrid_labels (--save-hybrid): per image
    [M, 5] (cls, cx, cy, w, h) input pixels, added to the candidates as val.py adds them (ops.nms.with_label_rows)."""
    if hybrid_labels is not None:
        cands = [with_label_rows(x, lb) for x, lb in zip(cands, hybrid_labels)]
    dets = [nms_select(x[x[:, 4] > nms.conf_thres], nms) for x in cands]
    if single_cls:
        dets = [torch.cat((d[:, :5], torch.zeros_like(d[:, 5:6])), 1) for d in dets]
    return dets


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer reads what it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def infer_batch(model, batch, device: torch.device, half: bool, cand_conf: float, nms: NmsConfig,
                single_cls: bool, times: StageTimes, augment: bool = False, hybrid: bool = False) -> BatchOutput:
    """One collated batch through the model and NMS, as val.py times it (preprocess, inference, NMS). augment:
    test-time augmentation (--augment); hybrid: the labels join the NMS input (--save-hybrid)."""
    t0 = time.perf_counter()
    im = batch.images.to(device, non_blocking=True)
    im = im.half() if half else im.float()
    im /= 255
    targets = batch.targets.to(device)
    _, _, height, width = im.shape
    labels = image_labels(targets, len(im), height, width)
    sync(device)
    t1 = time.perf_counter()
    pred = model(im, augment=True) if augment else model(im)
    sync(device)
    t2 = time.perf_counter()
    cands = nms_candidates(pred, cand_conf)
    dets = select(cands, nms, single_cls, labels if hybrid else None)
    sync(device)
    t3 = time.perf_counter()
    times.add("preprocess", t1 - t0)
    times.add("inference", t2 - t1)
    times.add("nms", t3 - t2)
    times.batches += 1
    return BatchOutput(list(batch.indices), cands, dets, labels, batch.shapes)


def image_labels(targets: torch.Tensor, n_images: int, height: int, width: int) -> list[torch.Tensor]:
    """A collated batch's targets [M, 6] (image in batch, cls, cx, cy, w, h normalized to the input) -> per image
    [m, 5] (cls, cx, cy, w, h) in input pixels, as val.py scales them."""
    scaled = torch.cat((targets[:, :2], targets[:, 2:] * torch.tensor((width, height, width, height),
                                                                         device=targets.device)), 1)
    return [scaled[scaled[:, 0] == k, 1:] for k in range(n_images)]


def loader_workers(batch_size: int, workers: int, cache: str | None, world_size: int = 1) -> int:
    """DataLoader worker processes for one rank, as YOLOv5 counts them (at most --workers, the cores shared by the
    ranks, none for batch 1), and none with a RAM image cache (a worker would fill its own copy, lost when it ends).
    On a small CPU machine `--workers 0` can be faster: the workers compete with the model's threads."""
    if batch_size == 1 or cache == "ram":
        return 0
    return min(workers, max(1, (os.cpu_count() or 1) // world_size))


def batch_loader(dataset: ValDataset, batch_ids: Iterable[int], workers: int, pin_memory: bool):
    """Collated batches of the given global batch ids, in the order the ids come (lazily: a dynamic schedule
    claims them as the loader asks)."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=_BatchSampler(dataset.plan, batch_ids),
                                       num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
                                       prefetch_factor=PREFETCH if workers else None)


def cached_batches(raw_cache: RawCache, batch_ids: Iterable[int], nms: NmsConfig, single_cls: bool,
                   times: StageTimes, hybrid: bool = False) -> Iterator[BatchOutput]:
    """Stored batches as BatchOutput, NMS re-run at the run's thresholds (with the labels when hybrid), without
    the model or the images."""
    for b in batch_ids:
        raw = raw_cache.read(b)
        cands = list(torch.split(raw.cands, raw.cand_counts.tolist()))
        labels = list(torch.split(raw.labels, raw.label_counts.tolist()))
        if single_cls:  # cached labels keep their classes
            labels = [single_class_labels(lb) for lb in labels]
        t0 = time.perf_counter()
        dets = select(cands, nms, single_cls, labels if hybrid else None)
        times.add("nms", time.perf_counter() - t0)
        times.batches += 1
        yield BatchOutput(raw.image_ids.tolist(), cands, dets, labels, raw.shapes)


def _plain(shape) -> tuple:
    """((h0, w0), ((gh, gw), (pw, ph))) as plain python numbers, so the cache loads with weights_only."""
    (h0, w0), ((gh, gw), (pw, ph)) = shape
    return (int(h0), int(w0)), ((float(gh), float(gw)), (float(pw), float(ph)))


class _BatchSampler:
    """Yields the image indices of each batch id as the schedule hands them out (lazily, for dynamic claims)."""

    def __init__(self, plan, batch_ids) -> None:
        self.plan, self.batch_ids = plan, batch_ids

    def __iter__(self):
        for b in self.batch_ids:
            yield batch_indices(self.plan, [b])[0]


def dataset_for(prep: Prepared, image_cache=None, times: StageTimes | None = None) -> ValDataset:
    return ValDataset(prep.records, prep.plan, prep.imgsz, image_cache=image_cache, times=times)
