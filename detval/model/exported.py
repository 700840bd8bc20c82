"""Exported YOLOv5 weights run as val.py v7.0's DetectMultiBackend runs them: TorchScript (torch.jit.load), ONNX
through onnxruntime, or ONNX through OpenCV DNN (--dnn). Each runtime is imported only when its file is loaded.

Every backend is a torch Module taking the preprocessed batch (float [B, 3, H, W], 0..1) and returning the head's
output [B, N, 5 + nc] (cx, cy, w, h in input pixels, objectness, class scores) as a tensor on the input's device.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from detval.model.errors import CheckpointError
from detval.model.formats import TORCHSCRIPT
from detval.model.metadata import ExportMetadata, onnx_metadata, torchscript_metadata
from detval.model.split_sigmoid import REFERENCE_THREADS, torch_threads

TORCHSCRIPT_RUNTIME, ONNXRUNTIME, OPENCV_DNN = TORCHSCRIPT, "ONNX Runtime", "OpenCV DNN"


def _first(y):
    """A YOLOv5 export returns (output,) or [output]: the output."""
    return y[0] if isinstance(y, (list, tuple)) else y


class TorchScriptModel(torch.nn.Module):
    """A traced YOLOv5 model. On the CPU each batch runs whole at REFERENCE_THREADS threads, as val.py's torch ran
    it, so the digits do not depend on this process's thread count (--nproc, --threads)."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threads = torch_threads(REFERENCE_THREADS) if x.device.type == "cpu" else contextlib.nullcontext()
        with threads:
            return _first(self.module(x))


class OnnxRuntimeModel(torch.nn.Module):
    """An onnxruntime InferenceSession: the batch goes in as a numpy array, the first output comes back."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.session.run(self.output_names, {self.input_name: x.cpu().numpy()})
        return torch.from_numpy(_first(y)).to(x.device)


class OpenCvDnnModel(torch.nn.Module):
    """A cv2.dnn network read from an ONNX file (val.py --dnn)."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net.setInput(x.cpu().numpy())
        return torch.from_numpy(_first(self.net.forward())).to(x.device)


def load_torchscript(path: Path, device: torch.device) -> tuple[TorchScriptModel, ExportMetadata]:
    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():  # torch 2.14 deprecates torch.jit; val.py v7.0 loads exactly this way
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), _extra_files=extra, map_location=device)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: not a readable TorchScript file ({str(e).splitlines()[0]})") from None
    module.float().eval()
    try:
        meta = torchscript_metadata(extra["config.txt"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable 'config.txt' metadata ({type(e).__name__}: {e})") from None
    return TorchScriptModel(module), meta


def load_onnxruntime(path: Path, device: torch.device) -> tuple[OnnxRuntimeModel, ExportMetadata, tuple]:
    """The session (CUDA provider on a CUDA device when onnxruntime has it), its metadata and its input's
    (batch, height, width), None where an axis is dynamic. Threads: this process's torch thread count."""
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(f"{path}: ONNX weights need onnxruntime: pip install 'detval[onnx]' "
                              "(or pass --dnn for OpenCV DNN)") from None
    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    providers = [p for p in wanted if p in onnxruntime.get_available_providers()] + ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types for a bad file
        raise CheckpointError(f"{path}: onnxruntime cannot read it ({type(e).__name__}: {e})") from None
    try:
        meta = onnx_metadata(session.get_modelmeta().custom_metadata_map)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    shape = session.get_inputs()[0].shape
    return OnnxRuntimeModel(session), meta, tuple(shape[i] if isinstance(shape[i], int) else None for i in (0, 2, 3))


def load_opencv_dnn(path: Path) -> tuple[OpenCvDnnModel, ExportMetadata]:
    """As val.py --dnn: no metadata is read (stride 32, the dataset's names)."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as e:
        raise CheckpointError(f"{path}: OpenCV DNN cannot read it ({str(e).strip().splitlines()[-1]})") from None
    return OpenCvDnnModel(net), ExportMetadata()
