"""Load YOLOv5 checkpoints safely: no YOLOv5 source tree, no pickled code run.

Official checkpoints pickle the whole module tree (`models.yolo.Model`, `models.common.Conv`, ...).
Instead of importing those classes, a restricted unpickler maps each admitted class to an inert stand-in
that only keeps the object's pickled state; any global outside the allowlist (`os.system`, `builtins.eval`,
an unknown layer class) stops the load with a `CheckpointError` that names it. Our own `DetectionModel`
is then rebuilt from the checkpoint's model yaml and receives the tensors, found by walking the
stand-ins' `_parameters` / `_buffers` / `_modules` exactly as `state_dict()` would.

Accepted files: a YOLOv5 checkpoint dict ('ema' or 'model' holding a pickled module, as attempt_load
picks it), the same dict holding a state_dict, a whole pickled module, or a bare state_dict (with cfg).
"""
from __future__ import annotations

import hashlib
import importlib
import pickle
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from detval.errors import DetvalError

from .yolo import DetectionModel, UnknownLayerError, load_model_yaml


class CheckpointError(DetvalError):
    """A weights file that cannot be loaded (unreadable, unsafe, unknown architecture, mismatched)."""


class RefusedGlobal(CheckpointError):
    """The pickle names a global outside the allowlist; `qualname` is 'module.Name' as pickled."""

    def __init__(self, qualname: str, reason: str, path: Path | None = None):
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}refused to unpickle {qualname}: {reason}")
        self.qualname, self.reason, self.path = qualname, reason, path


# ---------------------------------------------------------------------------------------------------
# The restricted unpickler
# ---------------------------------------------------------------------------------------------------

class PickledObject:
    """Inert stand-in for a pickled module object: it keeps the pickled state and runs no code.

    `pickled_class` is the 'module.Name' the pickle named; `state` the attribute dict it carried.
    """

    pickled_class = "?"

    def __init__(self, *args, **kwargs):  # pickles may pass constructor args; they are ignored
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple):  # (dict state, slot state) form
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"_state": state}

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}>"


# YOLOv5 classes (both spellings of the model class), then the torch.nn layers their trees contain.
_YOLO_CLASSES = {
    "models.yolo": {"Model", "DetectionModel", "Detect"},
    "models.common": {"Conv", "C3", "SPPF", "Bottleneck", "Concat"},
}
_NN_CLASSES = {
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.batchnorm": {"BatchNorm2d"},
    "torch.nn.modules.activation": {"SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish"},
    "torch.nn.modules.pooling": {"MaxPool2d"},
    "torch.nn.modules.upsampling": {"Upsample"},
    "torch.nn.modules.container": {"Sequential", "ModuleList"},
    "torch.nn.modules.linear": {"Identity"},
}
_STANDINS: dict[str, type[PickledObject]] = {}


def _standin(qualname: str) -> type[PickledObject]:
    if qualname not in _STANDINS:
        _STANDINS[qualname] = type(qualname.rsplit(".", 1)[1], (PickledObject,), {"pickled_class": qualname})
    return _STANDINS[qualname]


# Functions and types that only rebuild data (tensors, containers, numpy arrays): the same kind of
# globals torch's own weights_only unpickler admits.
_DATA_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("torch.nn.parameter", "Parameter"), ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "tuple"), ("builtins", "int"), ("builtins", "float"), ("builtins", "bool"),
    ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "slice"), ("builtins", "range"),
    ("_codecs", "encode"),  # how protocol 2 spells bytes objects (numpy array payloads)
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _import_data_global(module: str, name: str):
    if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core to numpy._core
        try:
            return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
        except ImportError:
            pass
    return getattr(importlib.import_module(module), name)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose find_class admits only the allowlist above; everything else raises RefusedGlobal."""

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        qualname = f"{module}.{name}"
        if module in _YOLO_CLASSES or module in _NN_CLASSES:
            if name in _YOLO_CLASSES.get(module, ()) or name in _NN_CLASSES.get(module, ()):
                return _standin(qualname)
            if module in _YOLO_CLASSES:
                raise RefusedGlobal(qualname, "unknown architecture: detval implements the YOLOv5 v7.0 P5 "
                                              "detection layers only (Conv, C3, Bottleneck, SPPF, Concat, Detect)")
        if (module, name) in _DATA_GLOBALS:
            return _import_data_global(module, name)
        if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
            obj = getattr(torch, name, None)
            if obj is not None:
                return obj
        if module == "numpy.dtypes" and name.endswith("DType"):
            return _import_data_global(module, name)
        raise RefusedGlobal(qualname, "not in detval's allowlist of tensor, container and YOLOv5 layer types")


def _restricted_pickle_module() -> types.ModuleType:
    """A stand-in for the `pickle` module, for torch.load(pickle_module=...): both its Unpickler and its
    load() (used by torch's legacy, pre-zip format) are restricted."""
    mod = types.ModuleType("detval_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler
    mod.UnpicklingError = pickle.UnpicklingError
    mod.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    return mod


# ---------------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_OTHER_FORMATS = [(b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
                  (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"), (b"\x7fELF", "an executable")]


def _sniff(path: Path) -> str:
    """'zip' (torch >= 1.6 format) or 'pickle' (legacy format); CheckpointError for anything else."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[0] == 0x80:  # pickle PROTO opcode: torch's legacy format starts with a pickled magic number
        return "pickle"
    what = next((d for magic, d in _OTHER_FORMATS if head.startswith(magic)), None)
    if what is None:
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            what = f"unrecognised data starting {head[:4]!r}"
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (looks like {what})")


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint archive ({e})") from None
    if any(n.endswith("constants.pkl") for n in names):
        raise CheckpointError(f"{path}: a TorchScript archive, not a checkpoint; pass the .pt file YOLOv5 trained")
    if not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"{path}: a zip archive without data.pkl, not a PyTorch checkpoint")


def read_checkpoint(path: Path):
    """Unpickle a weights file safely: torch's weights_only loader first (state_dicts), then, for module
    pickles, our restricted unpickler. Returns dicts / tensors / PickledObject trees, on the CPU."""
    if _sniff(path) == "zip":
        _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a global beyond torch's tensor allowlist (e.g. a pickled module): try ours
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint, truncated or corrupt? ({type(e).__name__}: {e})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())
    except RefusedGlobal as e:
        raise RefusedGlobal(e.qualname, e.reason, path) from None
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint, truncated or corrupt? ({type(e).__name__}: {e})") from None


def module_state_dict(obj: PickledObject, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """state_dict() of a pickled module tree: parameters and persistent buffers, keys joined with '.'."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    st = obj.state
    skip = set(st.get("_non_persistent_buffers_set") or ())
    for name, p in (st.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p.detach()
    for name, b in (st.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b.detach()
    for name, child in (st.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            out.update(module_state_dict(child, prefix + name + "."))
    return out


# ---------------------------------------------------------------------------------------------------
# Building our model from what was read
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A ready-to-run detector and what val needs to know about it.

    model: DetectionModel in eval mode, FP32 (fused unless load_model(fuse=False)), on the requested device.
    names: class names by id; nc: number of classes; stride: Tensor [nl] (8, 16, 32 for P5 models), CPU.
    sha256: hex digest of the weights file; path: the weights file; fused: whether Conv+BN are folded.
    """

    model: DetectionModel
    names: list[str]
    nc: int
    stride: torch.Tensor
    sha256: str
    path: Path
    fused: bool = True


def _names_list(names, nc: int, path: Path) -> list[str]:
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


def _find_detect(tree: PickledObject) -> PickledObject | None:
    layers = (tree.state.get("_modules") or {}).get("model")
    if isinstance(layers, PickledObject):
        mods = list((layers.state.get("_modules") or {}).values())
        if mods and isinstance(mods[-1], PickledObject) and mods[-1].pickled_class == "models.yolo.Detect":
            return mods[-1]
    return None


def _as_state_dict(obj) -> dict | None:
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    return None


def _pick(ckpt, path: Path):
    """(module tree or state_dict, metadata dict) from whatever the file held."""
    if isinstance(ckpt, PickledObject):
        return ckpt, {}
    if isinstance(ckpt, dict) and ("model" in ckpt or "ema" in ckpt):
        chosen = ckpt.get("ema") or ckpt.get("model")  # attempt_load's choice: EMA weights when saved
        if chosen is None:
            raise CheckpointError(f"{path}: checkpoint has neither 'ema' nor 'model' weights")
        return chosen, ckpt
    if _as_state_dict(ckpt) is not None:
        return ckpt, {}
    raise CheckpointError(f"{path}: unrecognised checkpoint content ({type(ckpt).__name__}); expected a YOLOv5 "
                          "checkpoint dict, a pickled model or a state_dict")


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
    ckpt = read_checkpoint(path)
    source, meta = _pick(ckpt, path)

    names = meta.get("names")
    stride = meta.get("stride")
    model_yaml = meta.get("yaml")
    if isinstance(source, PickledObject):
        st = source.state
        model_yaml = st.get("yaml", model_yaml)
        names = st.get("names", names)
        detect = _find_detect(source)
        stride = (detect.state.get("stride") if detect is not None else None)
        if stride is None:
            stride = st.get("stride")
        sd = module_state_dict(source)
    else:
        sd = _as_state_dict(source)
        if sd is None:
            raise CheckpointError(f"{path}: the checkpoint's model is neither a pickled model nor a state_dict")

    if cfg is not None:
        try:
            model_yaml = load_model_yaml(cfg)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read model config {cfg}: {e}") from None
    if not isinstance(model_yaml, dict):
        raise CheckpointError(f"{path}: unknown architecture: the file carries no model yaml; pass cfg= "
                              "(a model yaml, or a bundled name such as 'yolov5n')")
    if stride is not None:
        stride = torch.as_tensor(stride).detach().float().reshape(-1)
    try:
        model = DetectionModel(model_yaml, stride=stride)
    except (UnknownLayerError, KeyError, IndexError, TypeError) as e:
        raise CheckpointError(f"{path}: unknown architecture: {type(e).__name__}: {e}") from None
    if stride is not None and len(stride) != model.detect.nl:
        raise CheckpointError(f"{path}: stride {stride.tolist()} does not fit a model with {model.detect.nl} levels")

    fused_file = _is_fused_state(sd)
    if fused_file:
        model.fuse()
    _check_keys(model, sd, path)
    own = model.state_dict()
    # FP16 -> FP32 is exact; integer buffers (num_batches_tracked) keep their dtype.
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v.to(own[k].dtype)) for k, v in sd.items()})
    model.float().eval()
    if fuse:
        model.fuse()

    nc = model.nc
    names = _names_list(names, nc, path)
    if len(names) != nc:
        raise CheckpointError(f"{path}: {len(names)} class names for a model with nc={nc}")
    model.names = names
    model.to(device)
    return LoadedModel(model=model, names=names, nc=nc, stride=model.stride.detach().cpu().clone(),
                       sha256=file_sha256(path), path=path, fused=model.is_fused)


def check_nc(loaded: LoadedModel, data_nc: int) -> None:
    """Raise CheckpointError when the model and the dataset disagree on the number of classes."""
    if loaded.nc != data_nc:
        raise CheckpointError(f"{loaded.path}: the model has {loaded.nc} classes but the dataset has {data_nc}; "
                              "pass weights and data that were trained together")
