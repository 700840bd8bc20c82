"""`detval.validate(...)` and `detval.evaluate_raw(...)`: the Python entry points, and how a run is spread over
processes. Each rank runs `rank_main`; only rank 0 computes the metrics and writes the report."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from detval import dist
from detval.cache.raw_outputs import STORE_CONF, RawCache, RawKey, images_digest
from detval.config import ValConfig, increment_path
from detval.coco_step import (coco_ground_truth, finish_coco, predictions_json_path, rank_coco_part,
                               records_with_labels)
from detval.devices import parse_devices
from detval.engine import (PREFETCH, Prepared, RankOutput, StatsAccumulator, add_cached_batches, loader_workers,
                           plan_digest, prepare, prepare_from_raw, run_batches, summarize)
from detval.errors import DetvalError
from detval.model import check_nc, load_model
from detval.report.table import speed_line, table_header, table_rows
from detval.report.writer import write_run_files, write_txt_files
from detval.results import ValResult


def validate(cfg: ValConfig | None = None, **kwargs) -> ValResult:
    """Validate cfg.weights on cfg.data; kwargs are ValConfig fields when cfg is not given.

    One process for one device (or --dp); otherwise one process per device (or --nproc CPU processes), started
    here, or joined when running under torchrun. Returns rank 0's result (None on other torchrun ranks).
    """
    cfg = cfg or ValConfig(**kwargs)
    return _spread(rank_main, cfg)


def evaluate_raw(cfg: ValConfig | None = None, **kwargs) -> ValResult:
    """Recompute NMS and every metric from a raw-output cache (cfg.save_raw) without the model or the images."""
    cfg = cfg or ValConfig(**kwargs)
    if not cfg.save_raw:
        raise DetvalError("evaluate_raw needs the cache folder (save_raw / --raw)")
    return _spread(rank_main, replace(cfg, weights="", device="cpu"))


def _spread(fn, cfg: ValConfig):
    devices = parse_devices(cfg.device)
    cpu = devices[0].type == "cpu"
    if dist.torchrun_env_present():
        return dist.run_under_torchrun(fn, (cfg,), device="cpu" if cpu else None)
    world = cfg.nproc if cpu else (1 if cfg.dp else len(devices))
    if world > 1:
        return dist.launch(fn, (cfg,), world_size=world, devices=None if cpu else [str(d) for d in devices],
                           threads_per_rank=cfg.threads)
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    return fn(dist.single_process_context(devices[0]), cfg)


def rank_main(ctx: dist.DistContext, cfg: ValConfig) -> ValResult | None:
    """One rank's whole run (a model run when cfg.weights is set, else a re-evaluation of cfg.save_raw)."""
    t_start = time.perf_counter()
    say = print if ctx.is_main and not cfg.quiet else (lambda *a, **k: None)
    loaded = None
    if cfg.weights:
        loaded = load_model(cfg.weights, cfg.cfg, device=ctx.device)
        prep = prepare(cfg, int(loaded.stride.max()))
        if not cfg.single_cls:
            check_nc(loaded, prep.nc)
        say(f"detval: {loaded.path.name} ({sum(p.numel() for p in loaded.model.parameters())} parameters, "
            f"nc {loaded.nc}, sha256 {loaded.sha256[:12]}) on {ctx.device}"
            + (f" x {ctx.world_size} processes" if ctx.world_size > 1 else ""))
        raw = _open_raw_cache(cfg, loaded.sha256, prep) if cfg.save_raw else None
    else:
        raw = RawCache.open_existing(cfg.save_raw)
        cfg = _as_cached(cfg, raw)
        _check_eval_thresholds(cfg, raw)
        prep = prepare_from_raw(raw.meta)
    say(prep.scan_summary)
    dist.check_same(ctx, plan_digest(prep), "the images, labels and batch plan")
    for e in prep.excluded:
        say(f"WARNING: excluded {e.file}: {e.reason}", file=sys.stderr)
    coco_gt = _coco_ground_truth(cfg, prep) if cfg.save_json else None

    n_batches = len(prep.plan.batch_shapes)
    done = sorted(raw.done_batches()) if raw is not None else []
    todo = sorted(set(range(n_batches)) - set(done))
    if todo and loaded is None:
        raise DetvalError(f"{cfg.save_raw}: incomplete cache ({len(done)} of {n_batches} batches); "
                          f"finish it with detval val --save-raw {cfg.save_raw}")
    if done and loaded is not None:
        say(f"detval: resuming from {cfg.save_raw}: {len(done)} of {n_batches} batches cached, running {len(todo)}")

    acc = StatsAccumulator(cfg, prep.nc)
    counter = dist.ProgressCounter(ctx, "detval/progress")
    bar = tqdm(total=len(prep.records), desc=table_header(), bar_format="{l_bar}{bar:10}{r_bar}",
               disable=not ctx.is_main or cfg.quiet, file=sys.stderr)

    def show(total: int) -> None:
        if ctx.is_main:
            bar.n = min(total, bar.total)
            bar.refresh()

    def on_batch(n_images: int) -> None:
        show(counter.add(n_images))

    t_work = time.perf_counter()
    cached = [done[i] for i in dist.static_split(len(done), ctx.rank, ctx.world_size)]
    if cached:
        add_cached_batches(raw, cached, acc, on_batch)
    if todo:
        model = loaded.model.half() if cfg.half else loaded.model
        if cfg.channels_last:
            model.use_channels_last()
        if cfg.dp:  # on the CPU torch's DataParallel calls the model as it is
            ids = [d.index for d in parse_devices(cfg.device)] if ctx.device.type == "cuda" else None
            model = torch.nn.DataParallel(model, device_ids=ids)
        lookahead = PREFETCH * loader_workers(cfg, ctx.world_size)
        batches = (todo[i] for i in dist.iter_batches(ctx, len(todo), cfg.schedule, lookahead=lookahead))
        run_batches(prep, model, batches, ctx.device, cfg, acc, raw, on_batch, ctx.world_size)
    busy_s = time.perf_counter() - t_work
    if ctx.is_main and ctx.is_distributed and not bar.disable:  # keep the bar moving while the others finish
        counter.wait_for(len(prep.records), on_total=show)
    out = acc.output()
    per_rank = dist.gather_objects(ctx, (len(out.image_ids), out.batches, busy_s))
    coco_acc = rank_coco_part(ctx, coco_gt, out)
    merged = gather_outputs(ctx, out)
    wall_s = time.perf_counter() - t_work
    bar.n = bar.total
    bar.close()
    if not ctx.is_main:
        return None

    result, metrics = summarize(prep, merged, cfg)
    result.wall_seconds = time.perf_counter() - t_start
    for line in table_rows(result, cfg.verbose):
        say(line)
    say(speed_line(result.speed_ms, cfg.batch_size, prep.imgsz))
    scaling = dist.run_scaling(dist.rank_loads(per_rank), wall_s)
    result.distributed = scaling.to_json()  # one rank too: benchmarks compare batch-phase throughput
    if ctx.is_distributed:
        for line in dist.summary_lines(scaling):
            say(line)
    run_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
    run_dir.mkdir(parents=True, exist_ok=True)
    result.run_dir = run_dir
    if cfg.save_txt:
        write_txt_files(run_dir / "labels", prep.records, merged.image_ids, merged.det_counts, merged.det,
                        cfg.save_conf)
    weights = ({"path": str(cfg.weights), "sha256": loaded.sha256} if loaded is not None
               else {"path": raw.meta.get("weights", ""), "sha256": raw.key.weights_sha256})
    if coco_gt is not None:
        result.coco = finish_coco(coco_gt, merged, coco_acc, predictions_json_path(run_dir, weights["path"]), say)
    write_run_files(run_dir, cfg, result, metrics, merged.confusion, weights, merged.det["cls"].numpy())
    say(f"Results saved to {run_dir}")
    return result


def _open_raw_cache(cfg: ValConfig, weights_sha256: str, prep: Prepared) -> RawCache:
    key = RawKey(weights_sha256=weights_sha256, images_sha256=images_digest(prep.records), imgsz=prep.imgsz,
                 batch_size=cfg.batch_size, task=cfg.task, half=cfg.half,
                 store_conf=min(cfg.conf_thres, STORE_CONF))
    meta = {"weights": str(cfg.weights), "data": str(cfg.data), "images_dir": cfg.images, "device": cfg.device,
            "names": list(prep.names), "nc": prep.nc,
            "imgsz": prep.imgsz, "scan_summary": prep.scan_summary,
            "images": [str(r.path) for r in prep.records], "shapes_hw": [list(r.shape_hw) for r in prep.records],
            "batch_shapes": prep.plan.batch_shapes.tolist(), "batch_of": prep.plan.batch_of.tolist(),
            "excluded": [[e.file, e.reason] for e in prep.excluded]}
    return RawCache(cfg.save_raw, key, meta)


def _coco_ground_truth(cfg: ValConfig, prep: Prepared):
    """The COCO ground truth of a --save-json run (every rank builds it, before any inference). A re-evaluation
    reads the dataset again, for the labels the cache's manifest does not hold."""
    records = prep.records if cfg.weights else records_with_labels(cfg.data, cfg.images, prep.records, prep.nc)
    return coco_ground_truth(cfg.data, cfg.images, records, prep.names, cfg.single_cls, cfg.coco_backend)


def _as_cached(cfg: ValConfig, raw: RawCache) -> ValConfig:
    """A re-evaluation's settings: its own thresholds and outputs, the rest as the run that filled the cache had
    them (results.json records what the numbers come from; compare sees like for like)."""
    meta, key = raw.meta, raw.key
    return replace(cfg, data=meta.get("data", ""), images=meta.get("images_dir"), device=meta.get("device", ""),
                   imgsz=key.imgsz, batch_size=key.batch_size, task=key.task, half=key.half)


def _check_eval_thresholds(cfg: ValConfig, raw: RawCache) -> None:
    if cfg.conf_thres < raw.key.store_conf:
        raise DetvalError(f"{cfg.save_raw}: candidates were stored down to conf {raw.key.store_conf}; "
                          f"--conf-thres {cfg.conf_thres} needs a new model run")


def gather_outputs(ctx: dist.DistContext, out: RankOutput) -> RankOutput | None:
    """Every rank's per-image results on rank 0, in global image order; None elsewhere."""
    if not ctx.is_distributed:
        return _sorted(out)
    det = dist.gather_ragged(ctx, out.image_ids, out.det, out.det_counts)
    labels = dist.gather_ragged(ctx, out.image_ids, out.labels, out.label_counts)
    summaries = dist.gather_objects(ctx, (out.confusion, out.seconds, out.batches))
    if not ctx.is_main:
        return None
    image_ids, det_rows, det_counts = det
    _, label_rows, label_counts = labels
    confusion = sum(s[0] for s in summaries)
    seconds = {k: sum(s[1][k] for s in summaries) for k in out.seconds}
    return RankOutput(image_ids, det_counts, det_rows, label_counts, label_rows, confusion, seconds,
                      sum(s[2] for s in summaries))


def _sorted(out: RankOutput) -> RankOutput:
    """A single process may have run cached batches first: put its images in plan order too."""
    ids, det, det_counts = dist.sort_by_image(out.image_ids, out.det, out.det_counts)
    _, labels, label_counts = dist.sort_by_image(out.image_ids, out.labels, out.label_counts)
    return RankOutput(ids, det_counts, det, label_counts, labels, out.confusion, out.seconds, out.batches)
