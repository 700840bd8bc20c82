"""Reading a weights file: what it is (sniffing, zip checks), unpickling it safely, and what it holds.

Accepted files: a YOLOv5 checkpoint dict ('ema' or 'model' holding a pickled module, as attempt_load picks
it), the same dict holding a state_dict, a whole pickled module, or a bare state_dict. `read_contents` turns
any of them into one `CheckpointContents`; building the model from it is detval.model.build's job.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from detval.model.errors import CheckpointError
from detval.model.unpickler import PickledObject, RefusedGlobal, restricted_pickle_module

__all__ = ["CheckpointContents", "CheckpointError", "file_sha256", "module_state_dict", "read_checkpoint",
           "read_contents"]


@dataclass(frozen=True)
class CheckpointContents:
    """What a weights file holds, whatever its layout.

    state_dict: tensors by state_dict key, on the CPU, dtypes as saved (FP16 in official checkpoints).
    yaml: the model config dict the file carries, or None (a bare state_dict). names: class names as saved
    (list, {id: name} dict, or None). stride: the Detect layer's strides as saved ([nl] values), or None.
    """

    state_dict: dict[str, torch.Tensor]
    yaml: dict | None
    names: list | dict | None
    stride: object | None


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
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle_module())
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


def read_contents(path: Path) -> CheckpointContents:
    """Read `path` safely and pick its weights (EMA when saved, as attempt_load) and metadata."""
    source, meta = _pick(read_checkpoint(path), path)
    if isinstance(source, PickledObject):
        st = source.state
        detect = _find_detect(source)
        stride = detect.state.get("stride") if detect is not None else None
        return CheckpointContents(state_dict=module_state_dict(source), yaml=st.get("yaml", meta.get("yaml")),
                                  names=st.get("names", meta.get("names")),
                                  stride=st.get("stride") if stride is None else stride)
    sd = _as_state_dict(source)
    if sd is None:
        raise CheckpointError(f"{path}: the checkpoint's model is neither a pickled model nor a state_dict")
    return CheckpointContents(state_dict=sd, yaml=meta.get("yaml"), names=meta.get("names"),
                              stride=meta.get("stride"))
