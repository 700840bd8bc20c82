"""`detval val --save-json` end to end: the predictions file and results.json's "coco" entry are the same on one
and two processes, equal pycocotools on the written file, survive a re-evaluation from the raw cache, and a COCO
instances JSON works as --data. yolov5n on coco128 at 160 px (seconds per run)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detval.api import evaluate_raw, validate
from detval.coco.format import COCO80_NAMES, yolo_labels_to_coco_gt
from detval.config import ValConfig
from detval.errors import DetvalError
from detval.data import list_images, load_data_config, scan_images
from detval.coco.reference import reference_evaluate


def _cfg(data_dir: Path, tmp_path: Path, name: str, **kw) -> ValConfig:
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                imgsz=160, batch_size=16, device="cpu", workers=0, save_json=True, plots=False, quiet=True,
                project=str(tmp_path), name=name)
    base.update(kw)
    return ValConfig(**base)


def _coco(run_dir: Path) -> tuple[dict, str]:
    results = json.loads((run_dir / "results.json").read_text())
    return results["coco"], (run_dir / "yolov5n_predictions.json").read_text()


@pytest.fixture(scope="module")
def one(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    r = validate(_cfg(data_dir, root, "one", save_raw=str(root / "raw")))
    return root, r


def test_save_json_is_the_same_on_two_processes(data_dir, one, tmp_path):
    root, r1 = one
    coco1, pred1 = _coco(r1.run_dir)
    assert len(coco1["stats"]) == 12 and 0 < coco1["stats"][0] < coco1["stats"][1] < 1
    assert r1.coco == coco1
    r2 = validate(_cfg(data_dir, tmp_path, "two", nproc=2))
    coco2, pred2 = _coco(r2.run_dir)
    assert coco2 == coco1 and pred2 == pred1  # every float, every byte of the file


def test_save_json_equals_pycocotools_on_the_written_file(data_dir, one, tmp_path):
    """pycocotools against the same ground truth (coco128's YOLO labels as COCO, class indices as category ids) and the file val wrote."""
    root, r1 = one
    coco, _ = _coco(r1.run_dir)
    gt = yolo_labels_to_coco_gt(_records_by_path(data_dir), list(COCO80_NAMES), list(range(80)))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ref = reference_evaluate("pycocotools", tmp_path / "gt.json", r1.run_dir / "yolov5n_predictions.json")
    np.testing.assert_allclose(coco["stats"], ref.stats, rtol=0, atol=1e-12)
    csv = (r1.run_dir / "per_class.csv").read_text().splitlines()
    assert csv[0].endswith(",coco_AP") and len(csv) > 2


def _records_by_path(data_dir: Path) -> list:
    """coco128's images and labels as the data.yaml scan reads them, in file order."""
    data = load_data_config(data_dir / "coco128" / "coco128.yaml")
    return sorted(scan_images(list_images(data.val), data.nc).records, key=lambda rec: str(rec.path))


def test_raw_cache_re_evaluation_gives_the_same_coco_numbers(one, tmp_path):
    root, r1 = one
    r = evaluate_raw(ValConfig(weights="", data="", save_raw=str(root / "raw"), save_json=True, plots=False,
                               quiet=True, project=str(tmp_path), name="eval"))
    assert r.coco == r1.coco
    assert _coco(r.run_dir) == _coco(r1.run_dir)  # named after the weights the cache was made with


def test_coco_instances_json_as_data(data_dir, one, tmp_path):
    """--data instances.json --images DIR: the same images and labels as the data.yaml, so the same metrics."""
    root, r1 = one
    images = data_dir / "coco128" / "images" / "train2017"
    gt = yolo_labels_to_coco_gt(_records_by_path(data_dir), list(COCO80_NAMES), list(range(80)))
    (tmp_path / "instances.json").write_text(json.dumps(gt))
    r = validate(_cfg(data_dir, tmp_path, "json", data=str(tmp_path / "instances.json"), images=str(images)))
    assert (r.images, r.instances) == (r1.images, r1.instances)
    assert r.names == list(COCO80_NAMES)
    np.testing.assert_allclose([r.p, r.r, r.map50, r.map], [r1.p, r1.r, r1.map50, r1.map], rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.coco["stats"], r1.coco["stats"], rtol=0, atol=1e-6)
    with pytest.raises(DetvalError, match="--images"):
        validate(replace(_cfg(data_dir, tmp_path, "noimg"), data=str(tmp_path / "instances.json")))
