"""End-to-end `detval val` on the real checkpoint and coco128."""
import json

import numpy as np
import pytest

from detval.api import validate
from detval.config import ValConfig
from reference_predictions import printed_rows, reference_dir


def _cfg(data_dir, tmp_path, **kw):
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                project=str(tmp_path), name="run", exist_ok=True, quiet=True, plots=False)
    base.update(kw)
    return ValConfig(**base)


@pytest.mark.slow
def test_yolov5n_coco128_matches_yolov5_v7_val_py(data_dir, tmp_path, capsys):
    ref_dir = reference_dir(data_dir, "yolov5n-coco128-default")
    ref = json.loads((ref_dir / "metrics.json").read_text())
    r = validate(_cfg(data_dir, tmp_path, save_txt=True, save_conf=True, quiet=False, plots=True, verbose=True))
    out = capsys.readouterr().out
    for row in printed_rows(ref_dir, "all", "person"):
        assert row.rstrip() in out, (row, ref_dir)
    saved = json.loads((r.run_dir / "results.json").read_text())
    for key in ("P", "R", "mAP50", "mAP50-95"):
        assert abs(saved["metrics"][key] - ref[key]) < 1e-6, key
    np.testing.assert_allclose(saved["maps"], ref["maps_per_class_mAP50-95"], atol=1e-6)
    assert saved["weights"]["sha256"] == "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"
    assert (saved["images"], saved["instances"]) == (128, 929)
    for png in ("PR_curve.png", "F1_curve.png", "confusion_matrix.png"):
        assert (r.run_dir / png).is_file()
    # per-image detections: same count, same boxes and scores within the files' 6-digit rounding (row order may
    # differ where two scores agree to 6 digits)
    for ref_file in sorted((ref_dir / "predictions").glob("*.txt")):
        expected = np.loadtxt(ref_file, ndmin=2)
        got_file = r.run_dir / "labels" / ref_file.name
        got = np.loadtxt(got_file, ndmin=2) if got_file.exists() else np.zeros((0, 6))
        assert got.shape == expected.shape, ref_file.name
        for row in expected:
            same_cls = got[got[:, 0] == row[0]]
            assert np.abs(same_cls[:, 1:] - row[1:]).max(1).min() < 1e-5, ref_file.name


@pytest.mark.slow
@pytest.mark.parametrize("imgsz, batch", [(320, 32), (416, 7), (512, 16)])
def test_other_sizes_and_batches_run_and_stay_consistent(data_dir, tmp_path, imgsz, batch):
    r = validate(_cfg(data_dir, tmp_path, imgsz=imgsz, batch_size=batch))
    assert (r.images, r.instances) == (128, 929)
    assert 0.25 < r.map < r.map50 < 0.65  # yolov5n on coco128: 0.363 / 0.560 at 640
    assert len(r.per_class) == 71 and all(c.instances > 0 for c in r.per_class)


@pytest.mark.slow
def test_single_cls_max_det_and_speed_thresholds(data_dir, tmp_path):
    """--single-cls: one class 'item' over every label; --max-det 100 caps every image's detections (coco128 at
    conf 0.001 has images with more); conf 0.25 / iou 0.45 keeps fewer detections and lowers recall."""
    def boxes_per_image(r):
        return [len(f.read_text().splitlines()) for f in (r.run_dir / "labels").glob("*.txt")]

    base = validate(_cfg(data_dir, tmp_path, imgsz=320, name="base", save_txt=True))
    one = validate(_cfg(data_dir, tmp_path, imgsz=320, name="one", single_cls=True))
    assert one.names == ["item"] and [c.name for c in one.per_class] == ["item"]
    assert (one.images, one.instances) == (128, 929) and one.map50 > base.map50
    few = validate(_cfg(data_dir, tmp_path, imgsz=320, name="few", max_det=100, save_txt=True))
    assert max(boxes_per_image(base)) > 100 >= max(boxes_per_image(few))
    assert (few.images, few.instances) == (128, 929) and few.map != base.map
    strict = validate(_cfg(data_dir, tmp_path, imgsz=320, name="strict", conf_thres=0.25, iou_thres=0.45,
                           save_txt=True))
    assert sum(boxes_per_image(strict)) < sum(boxes_per_image(base)) and strict.r < base.r


def test_batch_size_one_small_images(data_dir, tmp_path):
    r = validate(_cfg(data_dir, tmp_path, imgsz=128, batch_size=1))
    assert (r.images, r.instances) == (128, 929) and 0 < r.map < r.map50


def test_nc_mismatch_and_missing_weights_are_clear_errors(data_dir, tmp_path):
    from detval.errors import DetvalError

    y = tmp_path / "three.yaml"
    y.write_text(f"path: {data_dir / 'coco128'}\nval: images/train2017\nnames: [a, b, c]\n")
    with pytest.raises(DetvalError, match="80"):
        validate(_cfg(data_dir, tmp_path, data=str(y), imgsz=64))
    with pytest.raises(DetvalError, match="nope.pt"):
        validate(_cfg(data_dir, tmp_path, weights=str(tmp_path / "nope.pt")))
