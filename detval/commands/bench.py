"""`detval bench`: where the time of a validation goes, stage by stage, in images per second.

One process, one pass over the batch plan, each stage timed on its own (nothing overlaps, unlike `detval val`
with DataLoader workers): decode (read + resize to --imgsz), letterbox (to the batch shape), preprocess (labels,
HWC -> CHW tensor, collate, /255), inference, NMS, metrics (per-image matching, then AP). With --cache the first
two stages become one, 'load (cache)'. The metrics are those of `detval val` at the same settings (printed, so a
fast but wrong setting shows).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import torch

from detval.cache.images import open_image_cache
from detval.commands.options import config_from_args
from detval.config import ValConfig
from detval.data import ValDataset, collate, letterbox, load_image
from detval.devices import parse_devices
from detval.engine import StatsAccumulator, image_labels, prepare, summarize, sync
from detval.model import load_model
from detval.ops.nms import nms_candidates
from detval.results import ValResult

STAGES = ("load (cache)", "decode", "letterbox", "preprocess", "inference", "nms", "metrics (match)", "metrics (AP)")


@dataclass
class BenchReport:
    """Seconds per stage (STAGES order, stages that ran only) over `images` images, and the run's metrics."""

    images: int
    seconds: dict[str, float] = field(default_factory=dict)
    setup_seconds: float = 0.0  # model load and dataset scan, before the first batch
    result: ValResult | None = None
    description: str = ""

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def lines(self) -> list[str]:
        """The printed table: seconds, ms per image, images per second and share of each stage."""
        n = max(self.images, 1)
        out = [self.description, f"{'stage':<18}{'seconds':>10}{'ms/image':>11}{'images/s':>11}{'share':>8}"]
        rows = list(self.seconds.items()) + [("total", self.total)]
        for name, s in rows:
            rate = f"{n / s:11.1f}" if s > 0 else f"{'inf':>11}"
            out.append(f"{name:<18}{s:10.3f}{s / n * 1e3:11.2f}{rate}{s / max(self.total, 1e-12):8.1%}")
        out.append(f"setup (model load, dataset scan) {self.setup_seconds:.2f} s; {n} images")
        if self.result is not None:
            r = self.result
            out.append(f"P {r.p:.3f}  R {r.r:.3f}  mAP50 {r.map50:.3f}  mAP50-95 {r.map:.3f}")
        return out


class _Preloaded:
    """An image_cache handing ValDataset items loaded (and timed) beforehand."""

    def __init__(self, items: dict) -> None:
        self.items = items

    def get(self, dataset, i: int) -> tuple:
        return self.items[i]


def _timed_load(ds: ValDataset, i: int, seconds: dict[str, float]) -> tuple:
    """ds.load_letterboxed(i), with decode and letterbox timed apart (tests/test_bench.py checks it is equal)."""
    t0 = time.perf_counter()
    img, (h0, w0), (h, w) = load_image(ds.records[i].path, ds.img_size)
    t1 = time.perf_counter()
    img, ratio, pad = letterbox(img, ds.plan.shape_of(i), scaleup=False)
    t2 = time.perf_counter()
    seconds["decode"] += t1 - t0
    seconds["letterbox"] += t2 - t1
    return img, (h0, w0), ((h / h0, w / w0), pad), ratio, (h, w)


def run_stage_bench(cfg: ValConfig, max_batches: int | None = None, chunked: bool = True) -> BenchReport:
    """Time each stage of a validation of cfg (weights, data, imgsz, batch_size, thresholds, device, threads,
    cache, cache_dir) over the first max_batches batches of the plan (all by default), in this process."""
    t_setup = time.perf_counter()
    device = parse_devices(cfg.device)[0]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loaded = load_model(cfg.weights, cfg.cfg, device=device)
    model = loaded.model.half() if cfg.half else loaded.model
    if not chunked:
        model.chunk_pixels = None
    prep = prepare(cfg, int(loaded.stride.max()))
    setup = time.perf_counter() - t_setup

    cache = open_image_cache(cfg.cache, cfg.cache_dir)
    batch_ids = list(range(prep.plan.n_batches))[:max_batches]
    stages = (["load (cache)"] if cache is not None else ["decode", "letterbox"]) + list(STAGES[3:])
    seconds = {s: 0.0 for s in stages}
    plain = ValDataset(prep.records, prep.plan, prep.imgsz)
    acc = StatsAccumulator(cfg, prep.nc)
    dtype = torch.float16 if cfg.half else torch.float32
    with torch.inference_mode():
        h, w = (int(v) for v in prep.plan.batch_shapes[batch_ids[0]])  # warm-up, untimed (oneDNN primitives)
        model(torch.zeros(len(prep.plan.batch(batch_ids[0])), 3, h, w, device=device, dtype=dtype))
        images = 0
        for b in batch_ids:
            idx = prep.plan.batch(b)
            items = {}
            for i in idx:
                if cache is not None:
                    t0 = time.perf_counter()
                    items[i] = cache.get(plain, i)
                    seconds["load (cache)"] += time.perf_counter() - t0
                else:
                    items[i] = _timed_load(plain, i, seconds)
            t0 = time.perf_counter()
            ds = ValDataset(prep.records, prep.plan, prep.imgsz, image_cache=_Preloaded(items))
            batch = collate([ds[i] for i in idx])
            im = batch.images.to(device).to(dtype) / 255
            targets = batch.targets.to(device)
            sync(device)
            t1 = time.perf_counter()
            pred = model(im)
            sync(device)
            t2 = time.perf_counter()
            dets = acc.select(nms_candidates(pred, cfg.conf_thres))
            sync(device)
            t3 = time.perf_counter()
            labels = image_labels(targets, len(dets), *im.shape[2:])
            acc.add(batch.indices, dets, labels, batch.shapes)
            t4 = time.perf_counter()
            seconds["preprocess"] += t1 - t0
            seconds["inference"] += t2 - t1
            seconds["nms"] += t3 - t2
            seconds["metrics (match)"] += t4 - t3
            images += len(idx)
        t0 = time.perf_counter()
        result, _ = summarize(prep, acc.output(), cfg)
        seconds["metrics (AP)"] += time.perf_counter() - t0

    mode = "chunked" if chunked and device.type == "cpu" and not cfg.half else "whole batches"
    desc = (f"detval bench: {loaded.path.name} on {cfg.data}, {images} images, imgsz {prep.imgsz}, batch "
            f"{cfg.batch_size}, {device}, {torch.get_num_threads()} threads, inference in {mode}"
            + (f", cache {cfg.cache}" if cfg.cache else ""))
    return BenchReport(images, seconds, setup, result, desc)


def run(args: argparse.Namespace) -> int:
    report = run_stage_bench(config_from_args(args), args.max_batches, chunked=not args.whole_batches)
    print("\n".join(report.lines()))
    return 0
