"""Which runtime a --weights name needs (as val.py v7.0 reads it), the one-line refusal of the others, the
metadata of exported files, and the batch size / rect choice per format. No model runs here."""
from __future__ import annotations

import pytest

from detval.cli import main
from detval.config import ConfigError, ValConfig
from detval.model.formats import ONNX, PYTORCH, TORCHSCRIPT, TRITON, UnsupportedWeightsError, check_supported, weights_format
from detval.model.metadata import DEFAULT_STRIDE, onnx_metadata, torchscript_metadata
from detval.model.run_shape import check_run_options, run_shape


@pytest.mark.parametrize("name, fmt", [
    ("runs/yolov5n.pt", PYTORCH), ("best.pth", PYTORCH), ("weights.bin", PYTORCH), ("yolov5n.torchscript", TORCHSCRIPT),
    ("a/yolov5n.onnx", ONNX), ("yolov5n_openvino_model", "OpenVINO"), ("yolov5n.engine", "TensorRT"),
    ("yolov5n.mlmodel", "CoreML"), ("yolov5n_saved_model", "TensorFlow SavedModel"), ("yolov5n.pb", "TensorFlow GraphDef"),
    ("yolov5n-fp16.tflite", "TensorFlow Lite"), ("yolov5n-int8_edgetpu.tflite", "TensorFlow Edge TPU"),
    ("yolov5n_web_model", "TensorFlow.js"), ("yolov5n_paddle_model", "PaddlePaddle"),
    ("grpc://localhost:8001", TRITON), ("http://host:8000/yolov5", TRITON)])
def test_weights_format_as_val_py_reads_the_name(name, fmt):
    assert weights_format(name) == fmt


@pytest.mark.parametrize("name", ["yolov5n.engine", "yolov5n_openvino_model", "yolov5n.tflite", "grpc://h:8001",
                                  "yolov5n_paddle_model", "yolov5n.mlmodel"])
def test_unsupported_formats_get_one_line_naming_them(name):
    fmt = weights_format(name)
    with pytest.raises(UnsupportedWeightsError) as e:
        check_supported(name, fmt)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{name}: {fmt} weights are not supported")


def test_cli_refuses_an_unsupported_format_with_exit_2(tmp_path, capsys):
    w = tmp_path / "yolov5n-fp16.tflite"
    w.write_bytes(b"TFL3")
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\nval: images\nnames: [a]\n")
    assert main(["val", "--weights", str(w), "--data", str(data), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"detval: error: {w}: TensorFlow Lite weights are not supported by detval (it runs PyTorch .pt, "
                   "TorchScript .torchscript and ONNX .onnx, with --dnn for OpenCV DNN); validate the .pt or an "
                   "ONNX export instead"]


def test_torchscript_metadata_as_val_py_reads_config_txt():
    meta = torchscript_metadata(b'{"shape": [1, 3, 640, 640], "stride": 32, "names": {"0": "person", "1": "bicycle"}}')
    assert meta.stride == 32 and meta.names == {0: "person", 1: "bicycle"} and meta.shape == (1, 3, 640, 640)
    empty = torchscript_metadata("")
    assert empty.stride == DEFAULT_STRIDE and empty.names is None and empty.shape is None


def test_onnx_metadata_names_are_a_literal_never_run():
    meta = onnx_metadata({"stride": "64", "names": "{0: 'person', 1: 'bicycle'}"})
    assert meta.stride == 64 and meta.names == {0: "person", 1: "bicycle"}
    assert onnx_metadata({}).stride == DEFAULT_STRIDE and onnx_metadata({}).names is None
    with pytest.raises(ValueError, match="not a dict or list literal"):
        onnx_metadata({"stride": "32", "names": "__import__('os').system('true')"})


def test_batch_and_rect_per_format_as_val_py():
    assert run_shape(PYTORCH, None, 640, 32) == run_shape(PYTORCH, None, 640, 32, export_batch=True)
    assert run_shape(PYTORCH, None, 640, 32).batch_size == 32 and run_shape(PYTORCH, None, 640, 32).rect
    ts = run_shape(TORCHSCRIPT, (None, 640, 640), 640, 32)
    assert (ts.batch_size, ts.rect, ts.note) == (32, False, None)
    onnx = run_shape("ONNX Runtime", (1, 640, 640), 640, 32)
    assert (onnx.batch_size, onnx.rect) == (1, False)
    assert onnx.note == "Forcing --batch-size 1 square inference (1,3,640,640) for non-PyTorch models"
    assert run_shape("OpenCV DNN", None, 320, 16).batch_size == 1
    dynamic = run_shape("ONNX Runtime", (None, None, None), 320, 16, export_batch=True)
    assert (dynamic.batch_size, dynamic.rect) == (16, False)
    assert run_shape("ONNX Runtime", (None, None, None), 320, 16).batch_size == 1  # opt-in only


def test_fixed_shapes_are_checked_before_the_run():
    with pytest.raises(ConfigError, match=r"exported for 640x640 inputs; pass --imgsz 640"):
        run_shape("ONNX Runtime", (1, 640, 640), 320, 32)
    with pytest.raises(ConfigError, match=r"batch axis is fixed at 1; export it with a dynamic batch axis"):
        run_shape("ONNX Runtime", (1, 640, 640), 640, 32, export_batch=True)
    with pytest.raises(ConfigError, match=r"batch axis is fixed at 1"):
        run_shape("OpenCV DNN", None, 640, 32, export_batch=True)


def test_run_options_per_format():
    check_run_options(PYTORCH, True, True, True)
    check_run_options(TORCHSCRIPT, True, False, False)
    with pytest.raises(ConfigError, match=r"^--half, --channels-last cannot apply to ONNX Runtime weights"):
        check_run_options("ONNX Runtime", True, True, False)
    with pytest.raises(ConfigError, match=r"^--dp cannot apply to TorchScript weights"):
        check_run_options(TORCHSCRIPT, False, False, True)


def test_weights_list_in_config():
    assert ValConfig(weights=["a.pt"], data="d.yaml").weights == "a.pt"
    cfg = ValConfig(weights=["a.pt", "b.pt"], data="d.yaml")
    assert cfg.weights == ("a.pt", "b.pt") and cfg.weights_list == ("a.pt", "b.pt")
    assert ValConfig(weights="a.pt", data="d.yaml").weights_list == ("a.pt",)


def test_cli_weights_takes_several_files_and_the_export_flags():
    from detval.cli import build_parser
    from detval.commands.options import config_from_args

    args = build_parser().parse_args(["val", "--weights", "a.pt", "b.pt", "--data", "d.yaml", "--dnn", "--export-batch"])
    cfg = config_from_args(args)
    assert (cfg.weights, cfg.dnn, cfg.export_batch) == (("a.pt", "b.pt"), True, True)
    one = config_from_args(build_parser().parse_args(["val", "--weights", "a.onnx", "--data", "d.yaml"]))
    assert (one.weights, one.dnn, one.export_batch) == ("a.onnx", False, False)
