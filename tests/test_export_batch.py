"""--export-batch: an ONNX export with a dynamic batch axis runs --batch-size images a batch (val.py: batch 1).
Measured on coco128 with yolov5n (README): the same floats and the same predictions JSON as batch 1."""
from __future__ import annotations

import json

import pytest

from dynamic_onnx import export_dynamic
from reference_runs import predictions, run_case, subset_yaml
from short_diff import assert_equal


@pytest.fixture(scope="module")
def dynamic_onnx(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "yolov5n-dynamic.onnx"
    return export_dynamic(data_dir / "weights" / "yolov5n.pt", out)


def _batch_size(result) -> int:
    return json.loads((result.run_dir / "results.json").read_text())["settings"]["batch_size"]


def _runs(data_dir, tmp_path, dynamic_onnx, **kw):
    weights = [str(dynamic_onnx)]  # run_case joins weights/ with an absolute path: the path itself
    one = run_case(data_dir, tmp_path, "batch1", weights, **kw)
    batched = run_case(data_dir, tmp_path, "batched", weights, export_batch=True, **kw)
    return one, batched


def test_export_batch_runs_batches_with_batch_1_digits(data_dir, tmp_path, dynamic_onnx):
    one, batched = _runs(data_dir, tmp_path, dynamic_onnx, data=subset_yaml(data_dir, tmp_path, 5), batch_size=4)
    assert (_batch_size(one), _batch_size(batched)) == (1, 4)
    assert len(predictions(one)) > 0
    assert_equal(predictions(batched), predictions(one), "batched predictions")


@pytest.mark.slow
def test_export_batch_on_coco128_as_the_readme_states(data_dir, tmp_path, dynamic_onnx):
    one, batched = _runs(data_dir, tmp_path, dynamic_onnx)
    assert (_batch_size(one), _batch_size(batched)) == (1, 32)
    assert (batched.p, batched.r, batched.map50, batched.map) == (one.p, one.r, one.map50, one.map)
    assert_equal(predictions(batched), predictions(one), "batched predictions")
