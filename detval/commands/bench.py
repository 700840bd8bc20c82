"""`detval bench`: where the time of a validation goes, stage by stage, in images per second.

One process, one pass over the batch plan through the run's own steps, each stage timed on its own (nothing
overlaps, unlike `detval val` with DataLoader workers): decode (read + resize to --imgsz), letterbox (to the batch shape), preprocess (labels,
HWC -> CHW tensor, collate, /255), inference, NMS, metrics (per-image matching, then AP). With --cache the first
two stages become one, 'load (cache)'. The metrics are those of `detval val` at the same settings (printed, so a
fast but wrong setting shows).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace

import torch

from detval.commands.options import config_from_args
from detval.config import ValConfig
from detval.devices import parse_devices
from detval.distributed import Comm, single_process_context
from detval.evaluation.yolo import YoloEvaluator
from detval.inference import StageTimes
from detval.results import ValResult
from detval.run import feed, open_inputs, run_live, val_result

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


def run_stage_bench(cfg: ValConfig, max_batches: int | None = None, chunked: bool = True) -> BenchReport:
    """Time each stage of a validation of cfg (weights, data, imgsz, batch_size, thresholds, device, threads,
    cache, cache_dir) over the first max_batches batches of the plan (all by default), in this process: the run's
    own steps (detval.run), with no loader workers so that loading is timed in-process."""
    t_setup = time.perf_counter()
    device = parse_devices(cfg.device)[0]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = single_process_context(device)
    inputs = open_inputs(ctx, replace(cfg, save_raw=None, save_json=False, quiet=True), lambda *a, **k: None)
    inputs = replace(inputs, todo=inputs.todo[:max_batches])
    model = inputs.loaded.model
    if not chunked:
        model.chunk_pixels = None
    prep = inputs.prep
    with torch.inference_mode():  # warm-up, untimed (oneDNN primitives)
        h, w = (int(v) for v in prep.plan.batch_shapes[inputs.todo[0]])
        model(torch.zeros(len(prep.plan.batch(inputs.todo[0])), 3, h, w, device=device,
                          dtype=torch.float16 if cfg.half else torch.float32))
    setup = time.perf_counter() - t_setup

    times = StageTimes({s: 0.0 for s in (["load (cache)"] if cfg.cache else ["decode", "letterbox"]) + list(STAGES[3:])})
    evaluator = YoloEvaluator(len(prep.metric_names))
    for out in run_live(ctx, inputs, times, workers=0, time_loading=True):
        feed([evaluator], out, times)
    t0 = time.perf_counter()
    evaluator.gather(Comm(ctx))
    result = val_result(evaluator.evaluate(), prep, times)
    times.add("metrics (AP)", time.perf_counter() - t0)

    mode = "chunked" if chunked and device.type == "cpu" and not cfg.half else "whole batches"
    desc = (f"detval bench: {inputs.loaded.path.name} on {cfg.data}, {times.images} images, imgsz {prep.imgsz}, batch "
            f"{inputs.cfg.batch_size}, {device}, {torch.get_num_threads()} threads, inference in {mode}"
            + (f", cache {cfg.cache}" if cfg.cache else ""))
    return BenchReport(times.images, times.seconds, setup, result, desc)


def run(args: argparse.Namespace) -> int:
    report = run_stage_bench(config_from_args(args), args.max_batches, chunked=not args.whole_batches)
    print("\n".join(report.lines()))
    return 0
