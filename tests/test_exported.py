"""TorchScript and ONNX exports (onnxruntime, OpenCV DNN) against val.py v7.0 on coco128: the same metrics (1e-6)
and the same --save-json predictions, on one process and on two; a raw cache of an ONNX run re-evaluates to the
same numbers. Fast tests run a few images and hold them to the reference's rows for those images."""
from __future__ import annotations

import pytest

from detval.api import evaluate_raw
from detval.config import ConfigError, ValConfig
from detval.errors import DetvalError
from detval.model.load import open_weights
from reference_runs import assert_metrics_equal, image_ids, predictions, reference, run_case, subset_yaml
from short_diff import assert_equal

CASES = {"yolov5n-torchscript": (["yolov5n.torchscript"], {}), "yolov5n-onnx": (["yolov5n.onnx"], {}),
         "yolov5n-onnx-dnn": (["yolov5n.onnx"], {"dnn": True})}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_exports_give_val_py_digits(data_dir, tmp_path, case):
    weights, kw = CASES[case]
    metrics, preds = reference(data_dir, case)
    r = run_case(data_dir, tmp_path, case, weights, **kw)
    assert_metrics_equal(r, metrics)
    assert_equal(predictions(r), preds, "predictions")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_exports_on_two_processes(data_dir, tmp_path, case):
    weights, kw = CASES[case]
    metrics, preds = reference(data_dir, case)
    r = run_case(data_dir, tmp_path, case, weights, nproc=2, **kw)
    assert_metrics_equal(r, metrics)
    assert_equal(predictions(r), preds, "predictions")


@pytest.mark.slow
def test_onnx_raw_cache_re_evaluates_to_the_same_numbers(data_dir, tmp_path):
    metrics, preds = reference(data_dir, "yolov5n-onnx")
    r1 = run_case(data_dir, tmp_path, "live", ["yolov5n.onnx"], save_raw=str(tmp_path / "raw"), nproc=2)
    r2 = evaluate_raw(ValConfig(weights="", data="", save_raw=str(tmp_path / "raw"), save_json=True, plots=False,
                                quiet=True, project=str(tmp_path), name="cached", nproc=2))
    for r in (r1, r2):
        assert_metrics_equal(r, metrics)
        assert_equal(predictions(r), preds, "predictions")


@pytest.mark.parametrize("case", list(CASES))
def test_a_few_images_give_the_reference_rows(data_dir, tmp_path, case):
    """Batch 1 (ONNX) or one square batch (TorchScript): each image's detections are its rows in the reference."""
    weights, kw = CASES[case]
    data = subset_yaml(data_dir, tmp_path, 3)
    _, preds = reference(data_dir, case)
    ids = image_ids(data)
    r = run_case(data_dir, tmp_path, case, weights, data=data, **kw)
    assert r.images == 3
    assert_equal(predictions(r), [p for p in preds if p["image_id"] in ids], "predictions")


def test_export_metadata_as_val_py_reads_it(data_dir):
    for name, runtime in (("yolov5n.torchscript", "TorchScript"), ("yolov5n.onnx", "ONNX Runtime")):
        m = open_weights((str(data_dir / "weights" / name),))
        assert (m.runtime, m.nc, m.names[0], m.names[79], m.stride.tolist()) == (runtime, 80, "person", "toothbrush", [32.0])
        assert m.input_shape == ((None, 640, 640) if runtime == "TorchScript" else (1, 640, 640))
    dnn = open_weights((str(data_dir / "weights" / "yolov5n.onnx"),), dnn=True)
    assert (dnn.runtime, dnn.names, dnn.nc, dnn.stride.tolist()) == ("OpenCV DNN", None, None, [32.0])  # val.py: data's names


def test_export_settings_are_checked_before_the_run(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="exported for 640x640 inputs; pass --imgsz 640"):
        run_case(data_dir, tmp_path, "small", ["yolov5n.onnx"], imgsz=320)
    with pytest.raises(ConfigError, match="batch axis is fixed at 1"):
        run_case(data_dir, tmp_path, "batched", ["yolov5n.onnx"], export_batch=True)
    with pytest.raises(ConfigError, match="--half cannot apply to ONNX Runtime weights"):
        run_case(data_dir, tmp_path, "half", ["yolov5n.onnx"], half=True)
    with pytest.raises(DetvalError, match="an ensemble takes PyTorch checkpoints"):
        run_case(data_dir, tmp_path, "mixed", ["yolov5n.pt", "yolov5n.onnx"])


def test_onnxruntime_is_imported_only_for_onnx_weights(data_dir):
    import subprocess
    import sys

    code = ("import sys; from detval.model.load import open_weights; open_weights((sys.argv[1],), dnn='--dnn' in sys.argv);"
            " print('onnxruntime' in sys.modules)")

    def imported(*args):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    w = data_dir / "weights"
    assert [imported(str(w / "yolov5n.pt")), imported(str(w / "yolov5n.onnx"), "--dnn"),
            imported(str(w / "yolov5n.onnx"))] == ["False", "False", "True"]
