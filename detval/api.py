"""`detval.api.validate(...)` and `detval.api.evaluate_raw(...)`: the Python entry points, and how a run is spread
over processes. Each rank runs `detval.run.run_rank`; only rank 0 computes the metrics and writes the report."""
from __future__ import annotations

from dataclasses import replace

import torch

from detval import distributed
from detval.config import ValConfig
from detval.devices import parse_devices
from detval.errors import DetvalError
from detval.results import ValResult
from detval.run import run_rank


def validate(cfg: ValConfig | None = None, **kwargs) -> ValResult:
    """Validate cfg.weights on cfg.data; kwargs are ValConfig fields when cfg is not given.

    One process for one device (or --dp); otherwise one process per device (or --nproc CPU processes), started
    here, or joined when running under torchrun. Returns rank 0's result (None on other torchrun ranks).
    """
    cfg = cfg or ValConfig(**kwargs)
    return _spread(run_rank, cfg)


def evaluate_raw(cfg: ValConfig | None = None, **kwargs) -> ValResult:
    """Recompute NMS and every metric from a raw-output cache (cfg.save_raw) without the model or the images."""
    cfg = cfg or ValConfig(**kwargs)
    if not cfg.save_raw:
        raise DetvalError("evaluate_raw needs the cache folder (save_raw / --raw)")
    return _spread(run_rank, replace(cfg, weights="", device="cpu"))


def _spread(fn, cfg: ValConfig):
    devices = parse_devices(cfg.device)
    cpu = devices[0].type == "cpu"
    if distributed.torchrun_env_present():
        return distributed.run_under_torchrun(fn, (cfg,), device="cpu" if cpu else None)
    world = cfg.nproc if cpu else (1 if cfg.dp else len(devices))
    if world > 1:
        return distributed.launch(fn, (cfg,), world_size=world, devices=None if cpu else [str(d) for d in devices],
                                  threads_per_rank=cfg.threads)
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    return fn(distributed.single_process_context(devices[0]), cfg)
