"""How a run feeds a model: batch size and rect or square batches, as val.py v7.0 decides them per format, and
the run options each format allows. Pure decisions on a LoadedModel's runtime and fixed input shape."""
from __future__ import annotations

from dataclasses import dataclass

from detval.config import ConfigError
from detval.model.formats import PYTORCH, TORCHSCRIPT


@dataclass(frozen=True)
class RunShape:
    """batch_size: images per batch; rect: aspect-ratio batches (else square imgsz x imgsz, dataset order);
    note: what to tell the user, or None."""

    batch_size: int
    rect: bool
    note: str | None = None


def run_shape(runtime: str, input_shape: tuple | None, imgsz: int, batch_size: int,
              export_batch: bool = False) -> RunShape:
    """val.py v7.0: rect batches for PyTorch weights only; TorchScript takes --batch-size, square; every other
    format batch 1, square. export_batch: an ONNX file with a free batch axis runs --batch-size images a batch
    (not val.py's choice: see the README for its digits). imgsz: the stride-rounded size."""
    if input_shape is not None:
        _, h, w = input_shape
        if (h is not None and h != imgsz) or (w is not None and w != imgsz):
            raise ConfigError(f"the model was exported for {h}x{w} inputs; pass --imgsz {h if h is not None else w}")
    if runtime == PYTORCH:
        return RunShape(batch_size, True)
    if runtime == TORCHSCRIPT:
        return RunShape(batch_size, False)
    if export_batch:
        fixed = input_shape[0] if input_shape is not None else 1
        if fixed is not None:
            raise ConfigError(f"--export-batch: the {runtime} model's batch axis is fixed at {fixed}; export it with "
                              "a dynamic batch axis (export.py --dynamic), or drop --export-batch")
        return RunShape(batch_size, False, f"--export-batch: square batches of {batch_size} ({runtime})")
    return RunShape(1, False, f"Forcing --batch-size 1 square inference (1,3,{imgsz},{imgsz}) for non-PyTorch models")


def check_run_options(runtime: str, half: bool, channels_last: bool, dp: bool) -> None:
    """--half runs PyTorch and TorchScript weights in FP16 (an ONNX file keeps its exported precision);
    --channels-last and --dp apply to PyTorch weights only."""
    asked = [(half and runtime not in (PYTORCH, TORCHSCRIPT), "--half"),
             (channels_last and runtime != PYTORCH, "--channels-last"), (dp and runtime != PYTORCH, "--dp")]
    bad = [flag for wrong, flag in asked if wrong]
    if bad:
        raise ConfigError(f"{', '.join(bad)} cannot apply to {runtime} weights (PyTorch .pt only"
                          + (", or TorchScript for --half)" if "--half" in bad else ")"))
