"""detval.data.coco_dataset: a COCO instances.json + images folder as YOLO-style records."""
from __future__ import annotations

import json

import numpy as np
import pytest
from coco_synth import coco128_as_coco

from detval.data.coco_dataset import records_from_coco_json
from detval.data.dataset_yaml import list_images, load_data_config
from detval.errors import DetvalError


def _write_set(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b.jpg", "a.jpg"):
        (images / name).write_bytes(b"")
    data = {
        "images": [{"id": 1, "file_name": "b.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "a.jpg", "width": 50, "height": 40},
                   {"id": 3, "file_name": "gone.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 2, "name": "two"}, {"id": 5, "name": "five"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 40, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 200, 100], "area": 5, "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 5, "bbox": [0, 0, 0, 10], "area": 0, "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 2, "bbox": [100, 50, 100, 50], "area": 10},
            {"id": 5, "image_id": 3, "category_id": 2, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0},
        ]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path / "instances.json", images


def test_records_from_coco_json(tmp_path):
    ann, images = _write_set(tmp_path)
    s = records_from_coco_json(ann, images)
    assert s.names == ["two", "five", "seven"] and s.class_map == [2, 5, 7]
    assert [r.path.name for r in s.records] == ["a.jpg", "b.jpg"]          # sorted by path
    a, b = s.records
    assert a.shape_hw == (40, 50) and a.labels.shape == (0, 5) and a.labels.dtype == np.float32
    assert b.shape_hw == (100, 200)
    # the crowd and the zero-width box are left out; file order kept
    np.testing.assert_allclose(b.labels, [[2, 30 / 200, 35 / 100, 40 / 200, 30 / 100],
                                          [0, 150 / 200, 75 / 100, 100 / 200, 50 / 100]], rtol=1e-6)
    assert len(s.excluded) == 1 and s.excluded[0].file.endswith("gone.jpg")
    assert "not in" in s.excluded[0].reason


def test_a_symlinked_folder_gives_the_paths_a_data_yaml_gives(tmp_path):
    """The same images reached through a symlinked dataset folder: the COCO reader's record paths are the YAML
    reader's (both resolve the folder, as v7.0 does), so records from either look each other up by path."""
    real = tmp_path / "real"
    real.mkdir()
    ann, _ = _write_set(real)
    (real / "data.yaml").write_text("path: .\nval: images\nnames: [two, five, seven]\n")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    from_yaml = list_images(load_data_config(link / "data.yaml").val)
    from_json = [r.path for r in records_from_coco_json(link / "instances.json", link / "images").records]
    assert from_json == from_yaml == [real.resolve() / "images" / n for n in ("a.jpg", "b.jpg")]


def test_bad_inputs_raise_clear_errors(tmp_path):
    ann, images = _write_set(tmp_path)
    with pytest.raises(DetvalError, match="image folder not found"):
        records_from_coco_json(ann, tmp_path / "nope")
    with pytest.raises(DetvalError, match="not found"):
        records_from_coco_json(tmp_path / "nope.json", images)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "categories": []}))
    with pytest.raises(DetvalError, match="bad.json: malformed"):
        records_from_coco_json(bad, images)


def test_coco128_round_trip(tmp_path):
    """coco128's YOLO labels -> COCO JSON -> records: the same labels, in YOLOv5's (sorted) image order."""
    gt, _, recs = coco128_as_coco()
    (tmp_path / "instances.json").write_text(json.dumps(gt))
    s = records_from_coco_json(tmp_path / "instances.json", recs[0].path.parent)
    assert s.excluded == []
    assert [r.path for r in s.records] == [r.path.resolve() for r in recs]   # the reader resolves the folder
    assert len(s.names) == 80 and s.class_map == [c["id"] for c in gt["categories"]]
    for ours, orig in zip(s.records, recs):
        assert ours.shape_hw == orig.shape_hw
        np.testing.assert_allclose(ours.labels, orig.labels, atol=2e-6)
