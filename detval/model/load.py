"""--weights -> a LoadedModel, whatever the format: PyTorch checkpoints (one, or several as an ensemble),
TorchScript and ONNX exports; any other format val.py runs is refused with one line naming it."""
from __future__ import annotations

from pathlib import Path

import torch

from detval.model.build import LoadedModel, load_model, names_list
from detval.model.checkpoint import file_sha256
from detval.model.ensemble import ensemble_of
from detval.model.errors import CheckpointError
from detval.model.exported import (ONNXRUNTIME, OPENCV_DNN, TORCHSCRIPT_RUNTIME, load_onnxruntime, load_opencv_dnn,
                                   load_torchscript)
from detval.model.formats import PYTORCH, TORCHSCRIPT, check_supported, weights_format


def open_weights(weights: tuple[str, ...], cfg: str | None = None, device: str | torch.device = "cpu",
                 dnn: bool = False) -> LoadedModel:
    """The model of --weights (several: an ensemble of PyTorch checkpoints). cfg: a model yaml for a state_dict;
    dnn: run an ONNX file with OpenCV DNN instead of onnxruntime. Raises CheckpointError naming the file."""
    formats = [weights_format(w) for w in weights]
    for w, fmt in zip(weights, formats):
        check_supported(w, fmt)
    if len(weights) > 1:
        others = [w for w, fmt in zip(weights, formats) if fmt != PYTORCH]
        if others:
            raise CheckpointError(f"{others[0]}: an ensemble takes PyTorch checkpoints (.pt) only")
        return ensemble_of([load_model(w, cfg, device=device) for w in weights])
    if formats[0] == PYTORCH:
        return load_model(weights[0], cfg, device=device)
    return load_exported(Path(weights[0]), formats[0], torch.device(device), dnn)


def load_exported(path: Path, fmt: str, device: torch.device, dnn: bool = False) -> LoadedModel:
    """A TorchScript or ONNX export, with its stride and names as val.py reads them."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if fmt == TORCHSCRIPT:
        model, meta = load_torchscript(path, device)
        runtime, shape = TORCHSCRIPT_RUNTIME, (None, *meta.shape[2:]) if meta.shape else None
    elif dnn:
        (model, meta), runtime, shape = load_opencv_dnn(path), OPENCV_DNN, None
    else:
        model, meta, shape = load_onnxruntime(path, device)
        runtime = ONNXRUNTIME
    names = names_list(meta.names, len(meta.names), path) if meta.names is not None else None
    return LoadedModel(model=model, names=names, nc=len(names) if names is not None else None,
                       stride=torch.tensor([float(meta.stride)]), sha256=file_sha256(path), path=path,
                       runtime=runtime, input_shape=shape)
