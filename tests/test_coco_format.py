"""detval.coco.format: reading COCO files (and failing clearly), YOLOv5's JSON export, YOLO labels as COCO GT."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_synth import LabelRecord as Record
from coco_synth import SynthSpec, make_coco_set

from detval.coco.format import (COCO80_TO_91, image_id_from_stem, load_coco_dets, load_coco_gt,
                                save_detections_json, yolo_detections_to_coco, yolo_labels_to_coco_gt)
from detval.errors import DetvalError
from detval.coco.evaluate import coco_evaluate
from detval.coco.reference import reference_evaluate


def test_load_from_file_equals_load_from_dict(tmp_path):
    gt_dict, dets = make_coco_set(SynthSpec(seed=0, n_images=10))
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    a, b = load_coco_gt(gt_dict), load_coco_gt(tmp_path / "gt.json")
    for name in ("image_ids", "category_ids", "ann_ids", "ann_image", "ann_category", "ann_boxes", "ann_area",
                 "ann_crowd"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert b.source == str(tmp_path / "gt.json")
    da, db = load_coco_dets(dets, a), load_coco_dets(str(tmp_path / "dt.json"), b)
    np.testing.assert_array_equal(da.boxes, db.boxes)
    np.testing.assert_array_equal(da.scores, db.scores)
    # image index points back at each detection's own image id
    assert a.image_ids[da.image_index].tolist() == [d["image_id"] for d in dets]
    assert len(da) == len(dets)


def _gt():
    return {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 3, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25}]}


def test_errors_name_the_file_and_the_item(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DetvalError, match="bad.json.*not valid JSON"):
        load_coco_gt(bad)
    with pytest.raises(DetvalError, match="not found"):
        load_coco_gt(tmp_path / "missing.json")
    gt = _gt()
    del gt["annotations"][0]["area"]
    with pytest.raises(DetvalError, match=r"annotations\[0\] has no 'area'"):
        load_coco_gt(gt)
    gt = _gt()
    gt["annotations"][0]["bbox"] = [1, 2, 3]
    with pytest.raises(DetvalError, match=r"annotations\[0\]\['bbox'\] is malformed"):
        load_coco_gt(gt)
    gt = _gt()
    gt["annotations"].append(dict(gt["annotations"][0]))
    with pytest.raises(DetvalError, match="duplicate annotation id 1"):
        load_coco_gt(gt)
    with pytest.raises(DetvalError, match="no 'categories'"):
        load_coco_gt({"images": []})


def test_detections_on_unknown_images_are_rejected(tmp_path):
    gt = load_coco_gt(_gt())
    f = tmp_path / "dets.json"
    f.write_text(json.dumps([{"image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(DetvalError, match=r"dets.json: 1 detections are on images that are not in .*image_id 7"):
        load_coco_dets(f, gt)
    with pytest.raises(DetvalError, match=r"detections\[0\] has no 'score'"):
        load_coco_dets([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}], gt)
    assert len(load_coco_dets([], gt)) == 0


def test_iscrowd_defaults_to_zero_and_unlisted_images_are_not_evaluated():
    gt = _gt()
    gt["annotations"].append({"id": 2, "image_id": 99, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25})
    loaded = load_coco_gt(gt)
    assert loaded.ann_crowd.tolist() == [False, False]
    assert loaded.ann_image.tolist() == [0, -1]


def test_coco80_to_91_is_coco_minus_its_unused_ids():
    unused = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}   # COCO 2014/2017 category ids without annotations
    assert list(COCO80_TO_91) == sorted(set(range(1, 91)) - unused)


def test_image_id_from_stem():
    assert image_id_from_stem("000000000009") == 9
    assert image_id_from_stem("img_9") == "img_9"


def _yolov5_save_one_json(predn: torch.Tensor, stem: str, class_map) -> list[dict]:
    """YOLOv5 v7.0 val.py save_one_json + utils.general.xyxy2xywh, transcribed with torch ops."""
    image_id = int(stem) if stem.isnumeric() else stem
    box = predn[:, :4].clone()
    box[:, 0] = (predn[:, 0] + predn[:, 2]) / 2
    box[:, 1] = (predn[:, 1] + predn[:, 3]) / 2
    box[:, 2] = predn[:, 2] - predn[:, 0]
    box[:, 3] = predn[:, 3] - predn[:, 1]
    box[:, :2] -= box[:, 2:] / 2
    return [{"image_id": image_id, "category_id": class_map[int(p[5])], "bbox": [round(x, 3) for x in b],
             "score": round(p[4], 5)} for p, b in zip(predn.tolist(), box.tolist())]


def test_yolo_detections_to_coco_matches_yolov5():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 600
    wh = torch.rand(500, 2, generator=g) * 300 + 0.01
    predn = torch.cat([xy, xy + wh, torch.rand(500, 1, generator=g),
                       torch.randint(0, 80, (500, 1), generator=g).float()], 1)
    for stem in ("000000000139", "frame_7"):
        ours = yolo_detections_to_coco(stem, predn[:, :4], predn[:, 4], predn[:, 5], COCO80_TO_91)
        assert ours == _yolov5_save_one_json(predn, stem, COCO80_TO_91)
        ours_np = yolo_detections_to_coco(stem, predn[:, :4].numpy(), predn[:, 4].numpy(), predn[:, 5].numpy(),
                                          COCO80_TO_91)
        assert ours_np == ours


def test_save_detections_json_is_json_dump(tmp_path):
    dets = [{"image_id": 1, "category_id": 3, "bbox": [1.5, 2.0, 3.25, 4.0], "score": 0.12345}]
    save_detections_json(tmp_path / "p.json", dets)
    assert (tmp_path / "p.json").read_text() == json.dumps(dets)


def test_yolo_labels_to_coco_gt_and_perfect_detections():
    recs = [Record(Path("a/000000000042.jpg"), (100, 200), np.array([[0, 0.5, 0.5, 0.5, 0.2],
                                                                    [2, 0.25, 0.75, 0.1, 0.4]], np.float32)),
            Record(Path("a/background.jpg"), (50, 60), np.zeros((0, 5), np.float32)),
            Record(Path("a/x.jpg"), (640, 480), np.array([[1, 0.5, 0.5, 1.0, 1.0]], np.float32))]
    gt = yolo_labels_to_coco_gt(recs, ["a", "b", "c"], [5, 6, 9])
    assert [im["id"] for im in gt["images"]] == [42, "background", "x"]
    # pycocotools cannot sort mixed int/str ids; detval orders the integers first
    assert load_coco_gt(gt).image_ids.tolist() == [42, "background", "x"]
    assert gt["categories"] == [{"id": 5, "name": "a"}, {"id": 6, "name": "b"}, {"id": 9, "name": "c"}]
    a0 = gt["annotations"][0]
    assert a0["id"] == 1 and a0["image_id"] == 42 and a0["category_id"] == 5 and a0["iscrowd"] == 0
    np.testing.assert_allclose(a0["bbox"], [50, 40, 100, 20], rtol=1e-6)
    assert a0["area"] == a0["bbox"][2] * a0["bbox"][3]
    assert [a["id"] for a in gt["annotations"]] == [1, 2, 3]
    assert gt["annotations"][2]["bbox"] == [0.0, 0.0, 480.0, 640.0]
    # detections exactly on the labels score AP 1 (1 / (1 + eps), as pycocotools computes it)
    for r in recs:
        r.path = r.path.with_name("img" + r.path.name)   # all string ids, which pycocotools can sort
    gt = yolo_labels_to_coco_gt(recs, ["a", "b", "c"], [5, 6, 9])
    dets = []
    for r in recs:
        h, w = r.shape_hw
        lab = r.labels.astype(np.float64)
        xyxy = np.stack([(lab[:, 1] - lab[:, 3] / 2) * w, (lab[:, 2] - lab[:, 4] / 2) * h,
                         (lab[:, 1] + lab[:, 3] / 2) * w, (lab[:, 2] + lab[:, 4] / 2) * h], 1)
        dets += yolo_detections_to_coco(r.path.stem, xyxy, np.ones(len(lab)), lab[:, 0], [5, 6, 9])
    loaded = load_coco_gt(gt)
    ours = coco_evaluate(loaded, load_coco_dets(dets, loaded))
    assert ours.stats[0] == pytest.approx(1.0, abs=1e-15)
    assert ours.per_class_ap == pytest.approx({5: 1.0, 6: 1.0, 9: 1.0}, abs=1e-15)
    np.testing.assert_array_equal(ours.stats, reference_evaluate("pycocotools", gt, dets).stats)


def test_names_may_be_a_dict():
    rec = Record(Path("1.jpg"), (10, 10), np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32))
    gt = yolo_labels_to_coco_gt([rec], {0: "zero", 1: "one"}, list(range(1000)))
    assert gt["categories"] == [{"id": 0, "name": "zero"}, {"id": 1, "name": "one"}]
    assert gt["annotations"][0]["category_id"] == 1


# --- the fast reader (detval.coco.json_columns) against the general one ----------------------------------------------

def _general_dets(dets, gt):
    """What the general reader gives for a parsed list (the in-memory path never takes the fast one)."""
    return load_coco_dets(json.loads(json.dumps(dets)), gt)


@pytest.mark.parametrize("dump", [
    lambda o: json.dumps(o),                                  # val.py's json.dump
    lambda o: json.dumps(o, separators=(",", ":")),           # compact
    lambda o: json.dumps(o, indent=2),                        # pretty-printed
])
def test_fast_reader_equals_general_reader(tmp_path, dump):
    from detval.coco.json_columns import read_detection_columns

    gt_dict, dets = make_coco_set(SynthSpec(seed=3, n_images=60, score_decimals=5))
    dets[0]["score"] = 1e-05                  # written as 1e-05: an exponent
    dets[1]["bbox"] = [1, 2, 3, 4]            # integers where floats are expected
    dets[2]["extra"] = {"nested": [1, {"x": "}, {"}]}   # ignored keys, with a '}' inside a string
    (tmp_path / "gt.json").write_text(dump(gt_dict))
    (tmp_path / "dt.json").write_text(dump(dets))
    gt = load_coco_gt(tmp_path / "gt.json")
    ref = _general_dets(dets, load_coco_gt(gt_dict))
    for block in (64, 1000, 1 << 20):          # blocks smaller than one record, a few records, the whole file
        cols = read_detection_columns(tmp_path / "dt.json", block_bytes=block)
        np.testing.assert_array_equal(cols.boxes, ref.boxes)
        np.testing.assert_array_equal(cols.scores, ref.scores)
    fast = load_coco_dets(tmp_path / "dt.json", gt)
    for name in ("image_index", "category_ids", "boxes", "scores"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)
    assert fast.category_ids.dtype == np.int64


def test_fast_reader_parses_floats_as_python_does(tmp_path):
    """msgspec's float parsing must be correctly rounded (areas decide small/medium/large, boxes the IoU):
    long mantissas, exponents, near-halfway decimals, compared bit for bit with float()."""
    from decimal import Decimal

    from detval.coco.json_columns import read_detection_columns

    rng = np.random.default_rng(0)
    texts = []
    for _ in range(20000):
        digits = "".join(map(str, rng.integers(0, 10, rng.integers(1, 26)))).lstrip("0") or "0"
        kind = rng.integers(0, 3)
        if kind == 0:
            p = int(rng.integers(0, len(digits) + 1))
            texts.append((digits[:p] or "0") + "." + (digits[p:] or "0"))
        elif kind == 1:
            texts.append(f"{digits}e{int(rng.integers(-320, 280))}")
        else:   # a double plus half an ulp, written in full: the hardest rounding cases
            x = float(rng.uniform(0, 700))
            texts.append(str(Decimal(x) + Decimal(np.spacing(x)) / 2))
    records = ", ".join(f'{{"image_id": 1, "category_id": 1, "bbox": [{t}, 0, 1, 1], "score": {t}}}' for t in texts)
    (tmp_path / "dt.json").write_text(f"[{records}]")
    cols = read_detection_columns(tmp_path / "dt.json")
    expected = np.array([float(t) for t in texts])
    assert cols.scores.tobytes() == expected.tobytes()
    assert cols.boxes[:, 0].tobytes() == expected.tobytes()


def test_files_outside_the_fast_path_are_read_the_general_way(tmp_path):
    gt_dict, dets = make_coco_set(SynthSpec(seed=4, n_images=10, string_ids=True))
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    gt = load_coco_gt(tmp_path / "gt.json")
    d = load_coco_dets(tmp_path / "dt.json", gt)
    assert gt.image_ids[d.image_index].tolist() == [x["image_id"] for x in dets]
    assert coco_evaluate(gt, d).stats.tolist() == reference_evaluate("pycocotools", gt_dict, dets).stats.tolist()


@pytest.mark.parametrize("text, message", [
    ('{"a": 1}', "must be a JSON list of objects, not dict"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5},]', "not valid JSON"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": NaN}]', r"detections\[0\] has score nan"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1e999}]', r"detections\[0\] has score inf"),
    ('[{"image_id": 2, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}, '
     '{"image_id": 1, "category_id": 3, "bbox": [0, 0, -1, 1], "score": 0.5}]',
     r"detections\[1\] has a negative width or height: bbox \[0.0, 0.0, -1.0, 1.0\]"),
    ('[{"image_id": 1, "category_id": 3.5, "bbox": [0, 0, 1, 1], "score": 0.5}]', "category_id 3.5 is not an integer"),
    ('[{"image_id": 7.5, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}]', r"not in .*image_id 7.5"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 0.5}]', r"detections\[0\]\['bbox'\] is malformed"),
])
def test_bad_detection_files_name_the_problem(tmp_path, text, message):
    f = tmp_path / "dets.json"
    f.write_text(text)
    with pytest.raises(DetvalError, match=message):
        load_coco_dets(f, load_coco_gt(_gt()))


def test_integral_float_image_ids_match_as_in_pycocotools(tmp_path):
    f = tmp_path / "dets.json"
    f.write_text('[{"image_id": 2.0, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}]')
    gt = load_coco_gt(_gt())
    assert gt.image_ids[load_coco_dets(f, gt).image_index].tolist() == [2]


def test_ground_truth_fast_path_equals_general_path(tmp_path):
    gt_dict, _ = make_coco_set(SynthSpec(seed=5, n_images=30))
    gt_dict["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]   # skipped, not built
    del gt_dict["categories"][0]["name"]
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    a, b = load_coco_gt(gt_dict), load_coco_gt(tmp_path / "gt.json")
    for name in ("image_ids", "category_ids", "ann_ids", "ann_image", "ann_category", "ann_boxes", "ann_area",
                 "ann_crowd"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.category_names == b.category_names
    assert b.category_names[gt_dict["categories"][0]["id"]] == str(gt_dict["categories"][0]["id"])
    (tmp_path / "none.json").write_text(json.dumps({k: v for k, v in gt_dict.items() if k != "annotations"}))
    assert len(load_coco_gt(tmp_path / "none.json").ann_ids) == 0


def test_round_like_python_is_pythons_round():
    """Vectorized for float32 (val.py's predn): every value, ties and signs included, as round(v, 3 / 5)."""
    from detval.coco.format import round_like_python

    rng = np.random.default_rng(0)
    x = np.concatenate([(rng.random(200_000) * 700 - 50).astype(np.float32),
                        rng.integers(0, 2 ** 31, 50_000).astype(np.uint32).view(np.float32),
                        (np.arange(-4000, 4000) / 2048).astype(np.float32),    # exact halves: ties to even
                        np.array([0.0005, 0.0015, -0.0005, 2.5e-6, 1e30, -0.0], np.float32)])
    x = x[np.isfinite(x)]
    for d in (3, 5):
        assert round_like_python(x, d).tobytes() == np.array([round(v, d) for v in x.tolist()]).tobytes()
    y = np.array([0.1 + 0.2, 2.675, -1.0005])                  # float64: Python's round itself
    assert round_like_python(y, 3).tolist() == [round(v, 3) for v in y.tolist()]
