"""One rank's validation run, top to bottom. The only module that ties data, model, inference, evaluation,
distributed and report together:

    open_inputs      the model (or a raw-output cache), the dataset read up front, the ranks' agreement, what is
                     already cached (resume)
    replay_cached    this rank's share of the cached batches: NMS at the run's thresholds, no model, no images
    run_live         this rank's whole batches of the plan: images -> model -> NMS (stored when --save-raw)
                     both feed every batch to the evaluators (yolo: val.py's metrics; coco: --save-json)
    gather           every evaluator's results on rank 0, in plan order, and what each rank did
    finish           rank 0: the table, the run folder (results.json, per_class.csv, txt, JSON, plots)

Errors a user can cause are found before any inference (preflight.check_outputs, then open_inputs); after
inference nothing computed is thrown away because of an output that fails to write (write_outputs). The rule is
stated in preflight.py.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from detval import distributed
from detval.cache.images import open_image_cache
from detval.cache.raw_outputs import STORE_CONF, RawCache, RunSettings
from detval.coco.ground_truth import CocoGt, coco_ground_truth, records_with_labels
from detval.coco.predictions import predictions_json_path
from detval.config import ValConfig, increment_path
from detval.data.prepare import Prepared, make_divisible, plan_digest, prepare, single_class
from detval.errors import DetvalError
from detval.evaluation.coco import CocoEvaluator
from detval.evaluation.records import ImageResults
from detval.evaluation.yolo import YoloEvaluator, YoloMetrics
from detval.inference import (PREFETCH, BatchOutput, StageTimes, batch_loader, cached_batches, dataset_for,
                              infer_batch, loader_workers)
from detval.model import LoadedModel, check_nc
from detval.model.formats import PYTORCH
from detval.model.load import open_weights
from detval.model.run_shape import check_run_options, run_shape
from detval.model.wrap import wrap_for_run
from detval.ops.nms import NmsConfig
from detval.preflight import check_outputs, check_raw_space
from detval.report.mosaics import BATCHES as MOSAIC_BATCHES, MosaicSource
from detval.report.table import speed_line, table_header, table_rows
from detval.report.run_folder import RunFolder
from detval.report.writer import write_metrics_files, write_plots, write_txt_files
from detval.results import ClassResult, ValResult
from detval.run_settings import executed_settings

Say = Callable[..., None]


@dataclass(frozen=True)
class RunInputs:
    """What a rank knows before its first batch. loaded: None for a re-evaluation of a raw cache; done / todo:
    the plan's batch ids already cached / still to run; weights: results.json's {"path", "sha256"}."""

    cfg: ValConfig
    prep: Prepared
    loaded: LoadedModel | None
    raw: RawCache | None
    done: list[int]
    todo: list[int]
    weights: dict
    coco_gt: CocoGt | None

    @property
    def nms(self) -> NmsConfig:
        c = self.cfg
        return NmsConfig(c.conf_thres, c.iou_thres, c.max_det, agnostic=c.single_cls)


@dataclass(frozen=True)
class Gathered:
    """Rank 0 after gather: val.py's metrics, the stage times summed over ranks, and the scaling summary."""

    yolo: YoloMetrics
    times: StageTimes
    scaling: distributed.RunScaling


def run_rank(ctx: distributed.DistContext, cfg: ValConfig) -> ValResult | None:
    """One rank's whole run (a model run when cfg.weights is set, else a re-evaluation of cfg.save_raw). Returns
    the result on rank 0, None on the others."""
    t_start = time.perf_counter()
    say = print if ctx.is_main and not cfg.quiet else (lambda *a, **k: None)
    check_outputs(cfg, writes_run_folder=ctx.is_main)  # before the model is even loaded
    inputs = open_inputs(ctx, cfg, say)
    evaluators = [YoloEvaluator(len(inputs.prep.metric_names))]
    if inputs.coco_gt is not None:
        evaluators.append(CocoEvaluator(inputs.coco_gt))
    times = StageTimes()
    with Progress(ctx, len(inputs.prep.records), enabled=not cfg.quiet) as progress:
        t_work = time.perf_counter()
        for out in replay_cached(ctx, inputs, times):
            feed(evaluators, out, times, progress)
        for out in run_live(ctx, inputs, times):
            if inputs.raw is not None:
                inputs.raw.write(int(inputs.prep.plan.batch_of[out.image_ids[0]]), out.raw())
            feed(evaluators, out, times, progress)
        busy_s = time.perf_counter() - t_work
        progress.wait_for_others()
        gathered = gather(ctx, evaluators, times, busy_s, t_work)
    if not ctx.is_main:
        return None
    return finish(inputs, evaluators, gathered, say, t_start)


# --- open inputs -------------------------------------------------------------------------------------------------

def open_inputs(ctx: distributed.DistContext, cfg: ValConfig, say: Say) -> RunInputs:
    """Everything a user can get wrong is found here, on every rank, before the first batch."""
    inputs = _open_model_run(ctx, cfg, say) if cfg.weights else _open_cached_run(cfg)
    prep = inputs.prep
    say(prep.scan_summary)
    for w in prep.warnings:
        say(w, file=sys.stderr)
    distributed.check_same(ctx, plan_digest(prep), "the images, labels and batch plan")
    for e in prep.excluded:
        say(f"WARNING: excluded {e.file}: {e.reason}", file=sys.stderr)
    for warning in setting_warnings(inputs.cfg):
        say(f"WARNING: {warning}", file=sys.stderr)
    n_batches = prep.plan.n_batches
    for problem in (inputs.raw.unreadable_batches().values() if inputs.raw is not None else ()):
        say(f"WARNING: {problem}" + ("; recomputed" if inputs.loaded is not None else ""), file=sys.stderr)
    if inputs.todo and inputs.loaded is None:
        raise DetvalError(f"{cfg.save_raw}: incomplete cache ({len(inputs.done)} of {n_batches} batches); "
                          f"finish it with detval val --save-raw {cfg.save_raw}")
    if inputs.done and inputs.loaded is not None:
        say(f"detval: resuming from {cfg.save_raw}: {len(inputs.done)} of {n_batches} batches cached, "
            f"running {len(inputs.todo)}")
    return replace(inputs, coco_gt=_coco_ground_truth(inputs) if inputs.cfg.save_json else None)


def setting_warnings(cfg: ValConfig) -> list[str]:
    """What val.py v7.0 warns about the settings of a train / val / test run."""
    if cfg.task == "speed":
        return []
    out = [f"confidence threshold {cfg.conf_thres} > 0.001 produces invalid results"] if cfg.conf_thres > 0.001 else []
    if cfg.save_hybrid:
        out.append("--save-hybrid will return high mAP from hybrid labels, not from predictions alone")
    return out


def _open_model_run(ctx: distributed.DistContext, cfg: ValConfig, say: Say) -> RunInputs:
    loaded, cfg, prep = _model_and_plan(ctx, cfg, say)
    if not cfg.single_cls:
        check_nc(loaded, prep.nc)
    say(f"detval: {loaded.summary()} on {ctx.device}" + (f" x {ctx.world_size} processes" if ctx.world_size > 1 else ""))
    raw = None
    if cfg.save_raw:
        settings = RunSettings(weights=_weights_setting(cfg), data=str(cfg.data), images_dir=cfg.images,
                               device=cfg.device)
        raw = RawCache.for_run(cfg.save_raw, loaded.sha256, prep, settings, cfg.batch_size, cfg.task, cfg.half,
                               cfg.conf_thres, runtime=loaded.runtime, augment=cfg.augment)
    done = sorted(raw.done_batches()) if raw is not None else []
    todo = sorted(set(range(prep.plan.n_batches)) - set(done))
    if raw is not None:
        check_raw_space(raw.folder, raw.stored_sizes(done), len(todo))
    return RunInputs(cfg, prep, loaded, raw, done, todo, {"path": _weights_setting(cfg), "sha256": loaded.sha256},
                     None)


def _model_and_plan(ctx: distributed.DistContext, cfg: ValConfig, say: Say) -> tuple[LoadedModel, ValConfig, Prepared]:
    """The model, the run's settings as its format runs them (val.py forces batch 1 on most exports) and the plan."""
    loaded = open_weights(cfg.weights_list, cfg.cfg, device=ctx.device, dnn=cfg.dnn)
    check_run_options(loaded.runtime, cfg.half, cfg.channels_last, cfg.dp)
    stride = int(loaded.stride.max())
    cfg, notes = executed_settings(cfg, ctx.device.type, stride)  # --imgsz to the stride, --half on CUDA only
    for note in notes:
        say(note, file=sys.stderr)
    shape = run_shape(loaded.runtime, loaded.input_shape, make_divisible(cfg.imgsz, stride), cfg.batch_size,
                      cfg.export_batch)
    if shape.note:
        say(shape.note)
    if cfg.augment and loaded.runtime != PYTORCH:  # val.py's DetectMultiBackend ignores augment there, silently
        print(f"WARNING: --augment runs PyTorch weights only; {loaded.runtime} runs without it (as val.py)",
              file=sys.stderr)
        cfg = replace(cfg, augment=False)
    cfg = replace(cfg, batch_size=shape.batch_size)
    return loaded, cfg, prepare(cfg, stride, rect=shape.rect)


def _weights_setting(cfg: ValConfig) -> str | list[str]:
    """--weights as results.json and the raw cache record it: the path, or the list of an ensemble's paths."""
    return cfg.weights if isinstance(cfg.weights, str) else list(cfg.weights)


def _open_cached_run(cfg: ValConfig) -> RunInputs:
    """A re-evaluation: its own thresholds and outputs, the rest as the run that filled the cache had them
    (results.json records what the numbers come from; compare sees like for like)."""
    raw = RawCache.open_existing(cfg.save_raw)
    if cfg.conf_thres < raw.key.store_conf:
        raise DetvalError(f"{cfg.save_raw}: candidates were stored down to conf {raw.key.store_conf}; "
                          f"--conf-thres {cfg.conf_thres} needs a new model run")
    s, key = raw.settings, raw.key
    cfg = replace(cfg, data=s.data, images=s.images_dir, device=s.device, imgsz=key.imgsz,
                  batch_size=key.batch_size, task=key.task, half=key.half, augment=key.augment)
    prep = raw.prepared(cfg.single_cls)
    done = sorted(raw.done_batches())
    todo = sorted(set(range(prep.plan.n_batches)) - set(done))
    return RunInputs(cfg, prep, None, raw, done, todo, {"path": s.weights, "sha256": key.weights_sha256}, None)


def _coco_ground_truth(inputs: RunInputs) -> CocoGt:
    """The COCO ground truth of a --save-json run (every rank builds it, before any inference). A re-evaluation
    reads the dataset again, for the labels the cache's manifest does not hold."""
    cfg, prep = inputs.cfg, inputs.prep
    records = prep.records
    if inputs.loaded is None:  # the labels' classes are zeroed by coco_ground_truth with --single-cls
        records = records_with_labels(cfg.data, cfg.images, records, prep.nc)
    return coco_ground_truth(cfg.data, cfg.images, records, prep.names, cfg.single_cls, cfg.coco_backend)


# --- batches -----------------------------------------------------------------------------------------------------

def replay_cached(ctx: distributed.DistContext, inputs: RunInputs, times: StageTimes) -> Iterable[BatchOutput]:
    """This rank's contiguous share of the cached batches (each costs the same: no model runs)."""
    mine = [inputs.done[i] for i in distributed.static_split(len(inputs.done), ctx.rank, ctx.world_size)]
    if not mine:
        return []
    return cached_batches(inputs.raw, mine, inputs.nms, inputs.cfg.single_cls, times, hybrid=inputs.cfg.save_hybrid)


def run_live(ctx: distributed.DistContext, inputs: RunInputs, times: StageTimes, workers: int | None = None,
             time_loading: bool = False) -> Iterable[BatchOutput]:
    """The batches still to run, as the schedule hands them to this rank, through the model and NMS. workers:
    DataLoader workers (default: as YOLOv5 counts them); time_loading (with workers=0, for `detval bench`): the
    dataset's decode, letterbox and preprocess are timed into times too."""
    cfg, prep = inputs.cfg, inputs.prep
    if not inputs.todo:
        return []
    if workers is None:
        workers = loader_workers(cfg.batch_size, cfg.workers, cfg.cache, ctx.world_size)
    model = wrap_for_run(inputs.loaded.model, cfg, ctx.device)
    todo = inputs.todo
    claimed = (todo[i] for i in distributed.iter_batches(ctx, len(todo), cfg.schedule, lookahead=PREFETCH * workers))
    dataset = dataset_for(prep, open_image_cache(cfg.cache, cfg.cache_dir), times if time_loading and workers == 0 else None)
    loader = batch_loader(dataset, claimed, workers, pin_memory=ctx.device.type == "cuda")
    cand_conf = min(cfg.conf_thres, STORE_CONF) if inputs.raw is not None else cfg.conf_thres
    return _infer_all(model, loader, ctx.device, cfg, cand_conf, inputs.nms, times)


def _infer_all(model, loader, device, cfg: ValConfig, cand_conf, nms, times) -> Iterable[BatchOutput]:
    with torch.inference_mode():
        for batch in loader:
            yield infer_batch(model, batch, device, cfg.half, cand_conf, nms, cfg.single_cls, times,
                              augment=cfg.augment, hybrid=cfg.save_hybrid)


def feed(evaluators: list, out: BatchOutput, times: StageTimes, progress: "Progress | None" = None) -> None:
    """One batch into every evaluator (timed as 'metrics (match)')."""
    t0 = time.perf_counter()
    images = out.native()
    for ev in evaluators:
        ev.process(images)
    times.add("metrics (match)", time.perf_counter() - t0)
    times.images += len(out.image_ids)
    if progress is not None:
        progress.add(len(out.image_ids))


# --- gather ------------------------------------------------------------------------------------------------------

def gather(ctx: distributed.DistContext, evaluators: list, times: StageTimes, busy_s: float,
           t_work: float) -> Gathered | None:
    """Collective: every evaluator's results, and what each rank did, on rank 0; None elsewhere."""
    per_rank = distributed.gather_objects(ctx, (times, busy_s))
    comm = distributed.Comm(ctx)
    for ev in evaluators:
        ev.gather(comm)
    if not ctx.is_main:
        return None
    wall_s = time.perf_counter() - t_work
    all_times = [t for t, _ in per_rank]
    summed = StageTimes({k: sum(t.seconds.get(k, 0.0) for t in all_times) for k in times.seconds},
                        sum(t.batches for t in all_times), sum(t.images for t in all_times))
    loads = [(t.images, t.batches, busy) for t, busy in per_rank]
    scaling = distributed.run_scaling(distributed.rank_loads(loads), wall_s)
    return Gathered(evaluators[0].evaluate(), summed, scaling)


# --- finish (rank 0) ---------------------------------------------------------------------------------------------

def finish(inputs: RunInputs, evaluators: list, gathered: Gathered, say: Say, t_start: float) -> ValResult:
    """The printed table, then the run folder."""
    cfg, prep = inputs.cfg, inputs.prep
    result = val_result(gathered.yolo, prep, gathered.times)
    rows = table_rows(result, cfg.verbose)
    say(rows[0])
    if result.instances == 0:  # val.py's warning, right after its 'all' row
        say(f"WARNING ⚠️ no labels found in {cfg.task} set, can not compute metrics without labels", file=sys.stderr)
    for line in rows[1:]:
        say(line)
    say(speed_line(result.speed_ms, cfg.batch_size, prep.imgsz))
    result.distributed = gathered.scaling.to_json()  # one rank too: benchmarks compare batch-phase throughput
    if gathered.scaling.world_size > 1:
        for line in distributed.summary_lines(gathered.scaling):
            say(line)
    result.run_dir = run_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
    write_outputs(inputs, evaluators, gathered, result, say, t_start)
    say(f"Results saved to {run_dir}")
    return result


def _first_weights(path: str | list[str]) -> str:
    """The file val.py names the predictions JSON after: the first of an ensemble."""
    return path if isinstance(path, str) else path[0]


def write_outputs(inputs: RunInputs, evaluators: list, gathered: Gathered, result: ValResult, say: Say,
                  t_start: float) -> None:
    """The run folder, metrics first (see report/run_folder.py): results.json and per_class.csv, then --save-txt,
    the COCO step (results.json written again with its numbers) and the plots. Raises RunIncomplete, after trying
    every output, if one failed."""
    cfg, prep, run_dir = inputs.cfg, inputs.prep, result.run_dir
    folder = RunFolder(run_dir, say)
    images = gathered.yolo.images
    if not folder.attempt(f"{run_dir}", lambda: run_dir.mkdir(parents=True, exist_ok=True)):
        folder.check_complete(result, _what_is_kept(inputs, saved=False))

    def save_metrics() -> None:
        result.wall_seconds = time.perf_counter() - t_start
        write_metrics_files(run_dir, cfg, result, inputs.weights)

    saved = folder.attempt(f"{run_dir / 'results.json'} and per_class.csv", save_metrics)
    if cfg.save_txt:
        folder.attempt(f"{run_dir / 'labels'} (--save-txt)", lambda: write_txt_files(
            run_dir / "labels", prep.records, images.image_ids, images.det_counts, images.det, cfg.save_conf))
    if len(evaluators) > 1:
        pred_json = predictions_json_path(run_dir, _first_weights(inputs.weights["path"]))
        coco = folder.attempt(f"{pred_json.name} and the COCO metrics (--save-json)", lambda: setattr(
            result, "coco", evaluators[1].evaluate(pred_json, say)))
        if coco and saved and result.coco is not None:
            saved = folder.attempt(f"{run_dir / 'results.json'} with the COCO metrics", save_metrics)
    if cfg.plots:
        write_plots(run_dir, gathered.yolo.metrics, gathered.yolo.confusion, result.names,
                    images.det.cls.numpy(), mosaic_source(inputs, images))
    folder.check_complete(result, _what_is_kept(inputs, saved))


def _what_is_kept(inputs: RunInputs, saved: bool) -> str:
    """The end of a RunIncomplete line: where the computed numbers still are."""
    kept = "results.json holds the metrics" if saved else "the metrics are not saved"
    if inputs.raw is not None:
        kept += (f"; {inputs.raw.folder} holds every batch: detval eval --raw {inputs.raw.folder} "
                 "writes a run folder again without the model")
    return kept


def mosaic_source(inputs: RunInputs, images: ImageResults) -> MosaicSource | None:
    """The first batches' images (read again) with their labels and detections, for the val_batch mosaics; None
    (and a warning) when a re-evaluated cache's images are no longer there."""
    prep = inputs.prep
    batches = [prep.plan.batch(b) for b in range(min(MOSAIC_BATCHES, prep.plan.n_batches))]
    wanted = sorted({i for batch in batches for i in batch})
    ids = set(wanted)
    records = list(prep.records)
    if inputs.loaded is None:  # a raw cache's manifest holds no labels: read them again
        try:
            found = records_with_labels(inputs.cfg.data, inputs.cfg.images, [records[i] for i in wanted], prep.nc)
        except DetvalError as e:
            print(f"WARNING: val_batch mosaics not drawn: {e}", file=sys.stderr)
            return None
        for i, rec in zip(wanted, single_class(found) if prep.single_cls else found):
            records[i] = rec
    elif not inputs.done:  # every image was decoded by this run, which said what its decoder said: once is enough
        records = [replace(r, decode_reported=True) if i in ids else r for i, r in enumerate(records)]
    offsets = images.det_offsets()
    rows = torch.cat([images.det.boxes, images.det.conf[:, None], images.det.cls[:, None]], 1).numpy()
    detections = {i: rows[offsets[k]:offsets[k + 1]] for k, i in enumerate(images.image_ids.tolist()) if i in ids}
    return MosaicSource(dataset_for(replace(prep, records=records)), batches, detections)


def val_result(yolo: YoloMetrics, prep: Prepared, times: StageTimes) -> ValResult:
    """All images' metrics -> ValResult (metrics, per-class rows as val.py prints them, speed in ms per image)."""
    names, m = prep.metric_names, yolo.metrics
    seen = int(yolo.images.image_ids.numel())
    per_class = []
    if m.per_class is not None:
        pc = m.per_class
        for i, c in enumerate(pc.classes):
            per_class.append(ClassResult(int(c), names[c], seen, int(m.nt[c]), float(pc.p[i]), float(pc.r[i]),
                                         float(pc.ap[i, 0]), float(pc.ap[i].mean())))
    speed = {k: times.seconds[k] / max(seen, 1) * 1e3 for k in ("preprocess", "inference", "nms")}
    return ValResult(images=seen, instances=int(m.nt.sum()), p=m.mp, r=m.mr, map50=m.map50, map=m.map,
                     maps=[float(x) for x in m.maps], per_class=per_class, speed_ms=speed, names=names,
                     excluded=prep.excluded)


class Progress:
    """The progress bar (rank 0, stderr): the run-wide count of images done, which every rank adds to."""

    def __init__(self, ctx: distributed.DistContext, total: int, enabled: bool = True) -> None:
        self.ctx = ctx
        self.counter = distributed.ProgressCounter(ctx, "detval/progress")
        self.bar = tqdm(total=total, desc=table_header(), bar_format="{l_bar}{bar:10}{r_bar}",
                        disable=not ctx.is_main or not enabled, file=sys.stderr)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.n = self.bar.total
        self.bar.close()

    def _show(self, total: int) -> None:
        if self.ctx.is_main:
            self.bar.n = min(total, self.bar.total)
            self.bar.refresh()

    def add(self, n_images: int) -> None:
        self._show(self.counter.add(n_images))

    def wait_for_others(self) -> None:
        """Rank 0, after its own batches: keep the bar moving while the other ranks finish."""
        if self.ctx.is_main and self.ctx.is_distributed and not self.bar.disable:
            self.counter.wait_for(self.bar.total, on_total=self._show)
