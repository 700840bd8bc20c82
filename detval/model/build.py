"""Building our DetectionModel from what a weights file holds, as val.py's attempt_load would run it.

The model is rebuilt from the checkpoint's model yaml (or the cfg given) and receives the file's tensors,
checked key by key and shape by shape; no class of the file's own code is ever imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from detval.model.checkpoint import CheckpointContents, file_sha256, read_contents
from detval.model.errors import CheckpointError
from detval.model.formats import PYTORCH
from detval.model.yolo import DetectionModel, UnknownLayerError, load_model_yaml


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A ready-to-run detector and what val needs to know about it.

    model: DetectionModel in eval mode, FP32 (fused unless load_model(fuse=False)), on the requested device; or an
    Ensemble of them, or an exported model's backend (detval.model.exported): each maps a float batch [B, 3, H, W]
    to [B, N, 5 + nc]. names: class names by id, nc: number of classes (None: the file does not say, as with
    --dnn); stride: Tensor [nl] (8, 16, 32 for P5 models; one value for an exported file), CPU.
    sha256: hex digest of the weights file (of the files' digests for an ensemble); path: the (first) weights file;
    fused: whether Conv+BN are folded. runtime: what runs it (PyTorch, TorchScript, ONNX Runtime, OpenCV DNN);
    input_shape: (batch, height, width) the file fixes, None for an axis it leaves free, None when it fixes none.
    """

    model: torch.nn.Module
    names: list[str] | None
    nc: int | None
    stride: torch.Tensor
    sha256: str
    path: Path
    fused: bool = True
    runtime: str = PYTORCH
    input_shape: tuple[int | None, int | None, int | None] | None = None

    def summary(self) -> str:
        """One line for the log: the file, what runs it and how big it is."""
        what = (f"{sum(p.numel() for p in self.model.parameters())} parameters" if self.runtime == PYTORCH
                else self.runtime)
        return f"{self.path.name} ({what}, nc {self.nc if self.nc is not None else '?'}, sha256 {self.sha256[:12]})"


def names_list(names, nc: int, path: Path) -> list[str]:
    if names is None:
        return [str(i) for i in range(nc)]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: class names dict has non-integer keys") from None
        if keys != list(range(len(keys))):
            raise CheckpointError(f"{path}: class names dict keys are not 0..{len(keys) - 1}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    return [str(n) for n in names]


def _check_keys(model: DetectionModel, sd: dict, path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    if missing or extra:
        def few(keys):
            return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")
        parts = ([f"missing keys: {few(missing)}"] if missing else []) + ([f"unexpected keys: {few(extra)}"] if extra else [])
        raise CheckpointError(f"{path}: weights do not match the model architecture; " + "; ".join(parts))
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: weights do not match the model architecture; {k} has shape "
                                  f"{tuple(sd[k].shape)} in the file, {tuple(v.shape)} in the model")


def _is_fused_state(sd: dict) -> bool:
    """A state_dict saved after fuse(): Conv layers carry conv.bias and no bn.* entries."""
    return not any(".bn." in k for k in sd) and any(k.endswith(".conv.bias") for k in sd)


def load_model(weights: str | Path, cfg: str | Path | None = None, device: str | torch.device = "cpu",
               fuse: bool = True) -> LoadedModel:
    """Load YOLOv5 v7.0 P5 weights into a DetectionModel, as val.py's attempt_load would run it.

    weights: a YOLOv5 .pt checkpoint, a pickled model, or a state_dict file. cfg: model yaml (path, or a
    bundled name such as 'yolov5n'); required when the file carries no yaml, and used instead of the
    file's yaml when given. The model is converted to FP32 and fused on the CPU (as the reference
    fuses it), then moved to `device`.
    Raises CheckpointError (message starts with the file path) for unreadable, unsafe or mismatched files.
    """
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    contents = read_contents(path)
    model = _build_model(contents, cfg, path)
    _load_weights(model, contents.state_dict, path, fuse)
    nc = model.nc
    names = names_list(contents.names, nc, path)
    if len(names) != nc:
        raise CheckpointError(f"{path}: {len(names)} class names for a model with nc={nc}")
    model.names = names
    model.to(device)
    return LoadedModel(model=model, names=names, nc=nc, stride=model.stride.detach().cpu().clone(),
                       sha256=file_sha256(path), path=path, fused=model.is_fused)


def _build_model(contents: CheckpointContents, cfg: str | Path | None, path: Path) -> DetectionModel:
    """An untrained DetectionModel of the file's architecture (cfg's, when given) and strides."""
    model_yaml = contents.yaml
    if cfg is not None:
        try:
            model_yaml = load_model_yaml(cfg)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read model config {cfg}: {e}") from None
    if not isinstance(model_yaml, dict):
        raise CheckpointError(f"{path}: unknown architecture: the file carries no model yaml (a plain "
                              "state_dict?); pass --cfg (ValConfig cfg=): a model yaml, or a bundled name such as "
                              "yolov5n")
    stride = contents.stride
    if stride is not None:
        stride = torch.as_tensor(stride).detach().float().reshape(-1)
    try:
        model = DetectionModel(model_yaml, stride=stride)
    except (UnknownLayerError, KeyError, IndexError, TypeError) as e:
        raise CheckpointError(f"{path}: unknown architecture: {type(e).__name__}: {e}") from None
    if stride is not None and len(stride) != model.detect.nl:
        raise CheckpointError(f"{path}: stride {stride.tolist()} does not fit a model with {model.detect.nl} levels")
    return model


def _load_weights(model: DetectionModel, sd: dict[str, torch.Tensor], path: Path, fuse: bool) -> None:
    """Copy sd into model (fusing first when the file was saved fused), then FP32, eval, and fused if asked."""
    if _is_fused_state(sd):
        model.fuse()
    _check_keys(model, sd, path)
    own = model.state_dict()
    # FP16 -> FP32 is exact; integer buffers (num_batches_tracked) keep their dtype.
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v.to(own[k].dtype)) for k, v in sd.items()})
    model.float().eval()
    if fuse:
        model.fuse()


def check_nc(loaded: LoadedModel, data_nc: int) -> None:
    """Raise CheckpointError when the model and the dataset disagree on the number of classes (unless the file
    does not say)."""
    if loaded.nc is not None and loaded.nc != data_nc:
        raise CheckpointError(f"{loaded.path}: the model has {loaded.nc} classes but the dataset has {data_nc}; "
                              "pass weights and data that were trained together")
