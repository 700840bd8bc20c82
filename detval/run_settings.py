"""The settings as a run executes them. val.py v7.0 adjusts two of the settings it is given, and says so: --imgsz
to a multiple of the model's largest stride (check_img_size), and --half to FP32 where FP16 is not supported
(its rule: half precision only on CUDA). detval applies both here, once the model's stride and the rank's device
are known, so that the run, the raw cache's key and results.json all record what actually ran."""
from __future__ import annotations

from dataclasses import replace

from detval.config import ValConfig
from detval.data.prepare import make_divisible


def executed_settings(cfg: ValConfig, device_type: str, stride: int) -> tuple[ValConfig, list[str]]:
    """-> (cfg as the run executes it, the warnings to print, val.py's wording)."""
    warnings = []
    imgsz = make_divisible(cfg.imgsz, stride)
    if imgsz != cfg.imgsz:
        warnings.append(f"WARNING ⚠️ --img-size {cfg.imgsz} must be multiple of max stride {stride}, "
                        f"updating to {imgsz}")
    half = cfg.half and device_type == "cuda"
    if cfg.half and not half:
        warnings.append(f"WARNING ⚠️ --half: half precision is only supported on CUDA, running FP32 on {device_type}")
    return replace(cfg, imgsz=imgsz, half=half), warnings
