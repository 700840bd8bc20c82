"""The model as a run executes it: FP16 (--half), NHWC convolutions (--channels-last), DataParallel (--dp)."""
from __future__ import annotations

import torch

from detval.config import ValConfig
from detval.devices import parse_devices


def wrap_for_run(model: torch.nn.Module, cfg: ValConfig, device: torch.device) -> torch.nn.Module:
    """model (a DetectionModel on device) with the run's execution options applied, in place where torch does."""
    if cfg.half:
        model = model.half()
    if cfg.channels_last:
        model.use_channels_last()
    if cfg.dp:  # on the CPU torch's DataParallel calls the model as it is
        ids = [d.index for d in parse_devices(cfg.device)] if device.type == "cuda" else None
        model = torch.nn.DataParallel(model, device_ids=ids)
    return model
