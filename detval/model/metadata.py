"""Stride and class names stored in exported weights, read as YOLOv5 v7.0's DetectMultiBackend reads them.

TorchScript: the extra file 'config.txt', JSON {"shape": [...], "stride": s, "names": {"0": ..., ...}} (digit keys
become ints). ONNX: the model's metadata_props 'stride' and 'names' (names a Python dict literal). Pure parsing of
the strings: the runtimes that hand them over live in detval.model.exported.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass

DEFAULT_STRIDE = 32  # val.py's when a file carries none


@dataclass(frozen=True)
class ExportMetadata:
    """stride: int pixels (DEFAULT_STRIDE when the file has none); names: {id: name} or None (val.py then takes
    the dataset's); shape: the input shape the file was exported at ([B, 3, H, W]) or None."""

    stride: int = DEFAULT_STRIDE
    names: dict | None = None
    shape: tuple[int, ...] | None = None


def _digit_keys(d: dict) -> dict:
    return {int(k) if k.isdigit() else k: v for k, v in d.items()}


def torchscript_metadata(config_txt: str | bytes) -> ExportMetadata:
    """The 'config.txt' extra file of a YOLOv5 TorchScript export ('' when the file has none)."""
    if not config_txt:
        return ExportMetadata()
    d = json.loads(config_txt, object_hook=_digit_keys)
    shape = tuple(int(x) for x in d["shape"]) if d.get("shape") else None
    return ExportMetadata(int(d["stride"]), d["names"], shape)


def onnx_metadata(props: dict[str, str]) -> ExportMetadata:
    """An ONNX model's metadata_props (onnxruntime's custom_metadata_map). val.py eval()s 'names'; a literal is
    all a YOLOv5 export writes, so ast.literal_eval reads it without running code."""
    if "stride" not in props:
        return ExportMetadata()
    try:
        names = ast.literal_eval(props["names"])
    except (KeyError, ValueError, SyntaxError):
        raise ValueError(f"metadata 'names' is not a dict or list literal: {props.get('names', '')[:60]!r}") from None
    return ExportMetadata(int(props["stride"]), names)
