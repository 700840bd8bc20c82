"""Which runtime a --weights file needs, decided from its name as YOLOv5 v7.0's DetectMultiBackend decides it.

Pure string logic (no runtime is imported here): detval.model.load picks the loader from the result.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from detval.model.errors import CheckpointError

PYTORCH, TORCHSCRIPT, ONNX = "PyTorch", "TorchScript", "ONNX"
TRITON = "Triton Inference Server"

# (format, the name part that marks it), in v7.0 export.py's export_formats() order: the first match wins.
FORMATS: tuple[tuple[str, str], ...] = (
    (PYTORCH, ".pt"), (TORCHSCRIPT, ".torchscript"), (ONNX, ".onnx"), ("OpenVINO", "_openvino_model"),
    ("TensorRT", ".engine"), ("CoreML", ".mlmodel"), ("TensorFlow SavedModel", "_saved_model"),
    ("TensorFlow GraphDef", ".pb"), ("TensorFlow Lite", ".tflite"), ("TensorFlow Edge TPU", "_edgetpu.tflite"),
    ("TensorFlow.js", "_web_model"), ("PaddlePaddle", "_paddle_model"))
SUPPORTED = (PYTORCH, TORCHSCRIPT, ONNX)


class UnsupportedWeightsError(CheckpointError):
    """A weights format val.py runs that detval does not (one line naming the format)."""


def weights_format(weights: str) -> str:
    """The format of a --weights entry, as val.py v7.0 reads it: the first FORMATS entry whose marker occurs in
    the file name ('_edgetpu.tflite' wins over '.tflite'); an http(s) or grpc URL without one is a Triton server.
    Any other name is PyTorch: detval reads every checkpoint or state_dict file (val.py refuses other suffixes)."""
    name = Path(weights).name
    hits = [fmt for fmt, marker in FORMATS if marker in name]
    if "TensorFlow Edge TPU" in hits:
        hits.remove("TensorFlow Lite")
    if hits:
        return hits[0]
    url = urlparse(str(weights))
    if url.netloc and any(s in url.scheme for s in ("http", "grpc")):
        return TRITON
    return PYTORCH


def check_supported(weights: str, fmt: str) -> None:
    """Raise UnsupportedWeightsError naming fmt when detval cannot run it."""
    if fmt not in SUPPORTED:
        raise UnsupportedWeightsError(
            f"{weights}: {fmt} weights are not supported by detval (it runs PyTorch .pt, TorchScript .torchscript "
            "and ONNX .onnx, with --dnn for OpenCV DNN); validate the .pt or an ONNX export instead")
