"""An ONNX export of yolov5n with a dynamic batch axis (what YOLOv5's `export.py --dynamic` makes), built for the
--export-batch tests from ../shared/data's yolov5n.pt with torch's TorchScript-based exporter, and YOLOv5's
metadata props (stride, names) appended to the ModelProto. Without the onnx package the exporter's onnxscript
step (custom functions, none here) is skipped."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

from detval.model import load_model


class _Head(torch.nn.Module):
    """The model's plain forward (no chunks), as the exporter traces it."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.detect(self.model.features(x))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def metadata_props(props: dict[str, str]) -> bytes:
    """ModelProto.metadata_props (field 14) entries: appended to a serialized model, they join its fields."""
    return b"".join(_field(14, _field(1, k.encode()) + _field(2, v.encode())) for k, v in props.items())


def export_dynamic(weights: Path, out: Path, imgsz: int = 640) -> Path:
    loaded = load_model(weights)
    if importlib.util.find_spec("onnx") is None:  # with it, the exporter runs as usual
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils
        onnx_proto_utils._add_onnxscript_fn = lambda proto, *a, **k: proto
    head = _Head(loaded.model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, torch.zeros(1, 3, imgsz, imgsz), str(out), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
    names = {i: n for i, n in enumerate(loaded.names)}
    with open(out, "ab") as f:
        f.write(metadata_props({"stride": str(int(loaded.stride.max())), "names": str(names)}))
    return out
