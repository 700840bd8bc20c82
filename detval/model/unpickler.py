"""The restricted unpickler: read a pickled YOLOv5 module tree without importing YOLOv5 or running pickled code.

Official checkpoints pickle the whole module tree (`models.yolo.Model`, `models.common.Conv`, ...). Instead of
importing those classes, each admitted class maps to an inert stand-in (`PickledObject`) that only keeps the
object's pickled state; any global outside the allowlist (`os.system`, `builtins.eval`, an unknown layer class)
stops the load with a `RefusedGlobal` that names it.
"""
from __future__ import annotations

import importlib
import pickle
import types
from pathlib import Path

import torch

from detval.model.errors import CheckpointError


class RefusedGlobal(CheckpointError):
    """The pickle names a global outside the allowlist; `qualname` is 'module.Name' as pickled."""

    def __init__(self, qualname: str, reason: str, path: Path | None = None):
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}refused to unpickle {qualname}: {reason}")
        self.qualname, self.reason, self.path = qualname, reason, path


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


def restricted_pickle_module() -> types.ModuleType:
    """A stand-in for the `pickle` module, for torch.load(pickle_module=...): both its Unpickler and its
    load() (used by torch's legacy, pre-zip format) are restricted."""
    mod = types.ModuleType("detval_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler
    mod.UnpicklingError = pickle.UnpicklingError
    mod.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    return mod
