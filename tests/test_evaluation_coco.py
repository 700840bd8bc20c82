"""detval.evaluation.coco (and coco.ground_truth): --save-json's predictions file and COCO metrics, on real coco128 detections of yolov5n.

The detections come from one real model run at imgsz 160 (a few seconds); every COCO number is checked against
pycocotools on the written file, and a two-rank run against the single process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detval import distributed
from detval.coco.evaluate import STAT_NAMES, merge
from detval.coco.format import COCO80_NAMES, COCO80_TO_91, yolo_labels_to_coco_gt
from detval.coco.ground_truth import CocoGt, coco_class_map, coco_ground_truth, records_with_labels
from detval.coco.predictions import predictions_json_path
from detval.coco.reference import reference_evaluate
from detval.config import ValConfig
from detval.data import ImageRecord
from detval.data.coco_dataset import read_coco_json_split
from detval.errors import DetvalError
from detval.evaluation import ImageBatch
from detval.evaluation.coco import CocoEvaluator
from detval.inference import StageTimes
from detval.run import open_inputs, run_live

quiet = lambda *a, **k: None  # noqa: E731


@pytest.fixture(scope="module")
def run(data_dir):
    """(cfg, prep, every batch as the evaluators get it, plan order) for yolov5n on coco128 at imgsz 160, as
    detval.run computes them."""
    cfg = ValConfig(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                    imgsz=160, workers=0, quiet=True, plots=False)
    ctx = distributed.single_process_context()
    inputs = open_inputs(ctx, cfg, quiet)
    return cfg, inputs.prep, [out.native() for out in run_live(ctx, inputs, StageTimes(), workers=0)]


def _evaluate(ctx, gt: CocoGt, batches: list[ImageBatch], pred_json: Path, say=quiet) -> dict | None:
    ev = CocoEvaluator(gt)
    for b in batches:
        ev.process(b)
    ev.gather(distributed.Comm(ctx))
    return ev.evaluate(pred_json, say) if ctx.is_main else None


def _single(gt: CocoGt, batches: list[ImageBatch], pred_json: Path, say=quiet) -> dict | None:
    return _evaluate(distributed.single_process_context(), gt, batches, pred_json, say)


def _subset(batches: list[ImageBatch], keep) -> list[ImageBatch]:
    """The images i with keep(i), per batch."""
    out = []
    for b in batches:
        k = [j for j, i in enumerate(b.image_ids) if keep(i)]
        out.append(ImageBatch([b.image_ids[j] for j in k], [b.dets[j] for j in k], [b.labels[j] for j in k]))
    return out


def _with_dets(batches: list[ImageBatch], fn) -> list[ImageBatch]:
    return [ImageBatch(b.image_ids, [fn(d) for d in b.dets], b.labels) for b in batches]


def _yolov5_save_one_json(predn: torch.Tensor, stem: str, class_map) -> list[dict]:
    """val.py v7.0's save_one_json, restated with torch ops on its float32 predn [N, 6] (xyxy, conf, cls)."""
    image_id = int(stem) if stem.isnumeric() else stem
    x = predn[:, :4]
    box = torch.stack(((x[:, 0] + x[:, 2]) / 2, (x[:, 1] + x[:, 3]) / 2, x[:, 2] - x[:, 0], x[:, 3] - x[:, 1]), 1)
    box[:, :2] -= box[:, 2:] / 2
    return [{"image_id": image_id, "category_id": class_map[int(p[5])], "bbox": [round(v, 3) for v in b],
             "score": round(p[4], 5)} for p, b in zip(predn.tolist(), box.tolist())]


def test_predictions_json_is_val_pys_and_metrics_equal_pycocotools(run, tmp_path):
    cfg, prep, out = run
    gt = coco_ground_truth(cfg.data, None, prep.records, prep.names)
    assert gt.class_map[:80] == list(range(80)) and isinstance(gt.source, dict)  # not coco/val2017: val.py's ids
    pred_json = predictions_json_path(tmp_path, cfg.weights)
    assert pred_json.name == "yolov5n_predictions.json"
    coco = _single(gt, out, pred_json)

    # the file, byte for byte: val.py's jdict in plan order (json.dump, default separators)
    expected = []
    for b in out:
        for i, predn in zip(b.image_ids, b.dets):
            expected += _yolov5_save_one_json(predn, prep.records[i].path.stem, list(range(1000)))
    assert len(expected) > 1000
    assert pred_json.read_text() == json.dumps(expected)

    # the numbers: pycocotools on that file and the in-memory GT
    ref = reference_evaluate("pycocotools", gt.source, pred_json)
    np.testing.assert_allclose(coco["stats"], ref.stats, rtol=0, atol=1e-12)
    assert 0.05 < coco["stats"][0] < coco["stats"][1] < 1
    names = dict(enumerate(COCO80_NAMES))
    assert coco["per_class_ap"] == pytest.approx({names[c]: ap for c, ap in ref.per_class_ap.items()}, abs=1e-12)
    assert coco["per_class_ap"]["giraffe"] > 0.3 and coco["per_class_ap"]["toaster"] == -1  # no toaster in coco128


def test_reference_backends_give_the_same_numbers(run, tmp_path):
    cfg, prep, out = run
    ours = _single(coco_ground_truth(cfg.data, None, prep.records, prep.names), out, tmp_path / "a.json")
    gt = coco_ground_truth(cfg.data, None, prep.records, prep.names, backend="pycocotools")
    lines = []
    theirs = _single(gt, out, tmp_path / "b.json", lambda *a, **k: lines.append(" ".join(map(str, a))))
    np.testing.assert_allclose(theirs["stats"], ours["stats"], rtol=0, atol=1e-12)
    assert theirs["per_class_ap"] == pytest.approx(ours["per_class_ap"], abs=1e-12)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    text = "\n".join(lines)
    assert "Evaluating pycocotools mAP... saving" in text
    assert f"maxDets=100 ] = {ours['stats'][0]:0.3f}" in text and text.count("Average") == len(STAT_NAMES)
    with pytest.raises(DetvalError, match="coco-backend"):
        coco_ground_truth(cfg.data, None, prep.records, prep.names, backend="nope")


def _rank_fn(ctx: distributed.DistContext, data: str, records, names, out: list[ImageBatch], pred_json: str):
    """One rank of a run: this rank's images are every world_size-th group of 7 (as a static split would give)."""
    gt = coco_ground_truth(data, None, records, names)
    return _evaluate(ctx, gt, _subset(out, lambda i: (i // 7) % ctx.world_size == ctx.rank), Path(pred_json))


@pytest.mark.parametrize("world_size", [2, 3])
def test_several_ranks_equal_one(run, tmp_path, world_size):
    """Each rank evaluates its images and accumulates its share of the categories: the same numbers."""
    cfg, prep, out = run
    one = _rank_fn(distributed.single_process_context(), cfg.data, prep.records, prep.names, out, str(tmp_path / "1.json"))
    many = distributed.launch(_rank_fn, (cfg.data, prep.records, prep.names, out, str(tmp_path / "n.json")),
                       world_size=world_size, threads_per_rank=1)
    assert many == one
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "n.json").read_bytes()


@pytest.mark.parametrize("cores", [1, 3, 5])
def test_one_rank_on_any_number_of_cores_gives_the_same_file_and_numbers(run, tmp_path, monkeypatch, cores):
    """One rank shares its cores between the categories' accumulation and the JSON's writing: one core (all
    here, one after the other), or several split between the two, write the same bytes and the same numbers."""
    import detval.evaluation.coco as evaluation_coco

    cfg, prep, out = run
    gt = coco_ground_truth(cfg.data, None, prep.records, prep.names)
    plain = _single(gt, out, tmp_path / "plain.json")
    monkeypatch.setattr(evaluation_coco, "available_cores", lambda: cores)
    assert _single(gt, out, tmp_path / "cores.json") == plain
    assert (tmp_path / "cores.json").read_bytes() == (tmp_path / "plain.json").read_bytes()


def test_rank_parts_merge_to_the_whole_even_when_a_rank_has_no_images(run):
    cfg, prep, out = run
    gt = coco_ground_truth(cfg.data, None, prep.records, prep.names)
    whole = _per_image(gt, out)
    parts = [_per_image(gt, _subset(out, keep)) for keep in (lambda i: i % 3 == 0, lambda i: i % 3 != 0,
                                                              lambda i: False)]
    merged = merge(parts)
    for name in whole.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)


def _per_image(gt: CocoGt, batches: list[ImageBatch]):
    ev = CocoEvaluator(gt)
    for b in batches:
        ev.process(b)
    return ev.per_image()


def test_no_detections_writes_nothing(run, tmp_path):
    cfg, prep, out = run
    gt = coco_ground_truth(cfg.data, None, prep.records, prep.names)
    none = _with_dets(out, lambda d: d[:0])
    assert _single(gt, none, tmp_path / "p.json") is None
    assert not (tmp_path / "p.json").exists()


def _coco128_instances(prep, image_id=lambda i, stem: int(stem)) -> dict:
    """coco128's labels as a COCO instances dict (91-ids), plus crowd 'person' boxes over the first ten images and
    one image that is not there."""
    records = sorted(prep.records, key=lambda r: str(r.path))
    gt = yolo_labels_to_coco_gt(records, list(COCO80_NAMES), COCO80_TO_91)
    ids = {img["id"]: image_id(k, str(img["id"]).zfill(12)) for k, img in enumerate(gt["images"])}
    for img in gt["images"]:
        img["id"] = ids[img["id"]]
    for a in gt["annotations"]:
        a["image_id"] = ids[a["image_id"]]
    for img in gt["images"][:10]:
        w, h = img["width"], img["height"]
        gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": img["id"], "category_id": 1,
                                  "bbox": [0.0, 0.0, float(w), float(h)], "area": float(w * h), "iscrowd": 1})
    gt["images"].append({"id": 999999, "file_name": "not_here.jpg", "width": 640, "height": 480})
    return gt


def test_coco_json_input(run, data_dir, tmp_path):
    """--data instances.json --images DIR: records as the YAML scan reads them; image ids from the JSON (not the
    stems); crowds and GT-only images as pycocotools sees them."""
    cfg, prep, out = run
    images = data_dir / "coco128" / "images" / "train2017"
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps(_coco128_instances(prep, image_id=lambda k, stem: 5000 + 3 * k)))

    split = read_coco_json_split(instances, images)
    assert len(split.records) == 128
    assert [e.file for e in split.excluded] == [str(images.resolve() / "not_here.jpg")]  # the folder resolved
    assert split.names == list(COCO80_NAMES) and split.class_map == list(COCO80_TO_91)
    assert "126 images, 2 backgrounds, 1 missing" in split.scan_summary
    scanned = {str(r.path): r for r in prep.records}
    for r in split.records:
        s = scanned[str(r.path)]
        assert r.shape_hw == s.shape_hw
        np.testing.assert_allclose(r.labels, s.labels, atol=2e-6)

    gt = coco_ground_truth(instances, images, prep.records, split.names)
    assert gt.source == str(instances) and min(gt.record_ids) >= 5000 and (gt.record_index >= 0).all()
    coco = _single(gt, out, tmp_path / "pred.json")
    ref = reference_evaluate("pycocotools", instances, tmp_path / "pred.json",
                             img_ids=sorted(gt.record_ids))
    np.testing.assert_allclose(coco["stats"], ref.stats, rtol=0, atol=1e-12)
    no_crowd = _single(coco_ground_truth(cfg.data, None, prep.records, prep.names), out, tmp_path / "b.json")
    assert coco["stats"][0] > no_crowd["stats"][0]   # the crowds turned unmatched 'person' detections ignored


def test_annotations_file_beside_a_data_yaml_is_used(run, data_dir, tmp_path):
    """val.py's anno_json: <path>/annotations/instances_val2017.json; image ids from the numeric stems."""
    cfg, prep, out = run
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(_coco128_instances(prep)))
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "val": str(data_dir / "coco128" / "images" / "train2017"),
                                    "names": dict(enumerate(COCO80_NAMES))}))
    gt = coco_ground_truth(data, None, prep.records, prep.names)
    assert gt.source == str(tmp_path / "annotations" / "instances_val2017.json")
    assert gt.record_ids == [int(r.path.stem) for r in prep.records]
    coco = _single(gt, out, tmp_path / "pred.json")
    ref = reference_evaluate("pycocotools", gt.source, tmp_path / "pred.json", img_ids=gt.record_ids)
    np.testing.assert_allclose(coco["stats"], ref.stats, rtol=0, atol=1e-12)


def test_single_cls_and_records_from_a_raw_cache(run, tmp_path):
    cfg, prep, out = run
    bare = [ImageRecord(r.path, r.shape_hw, np.zeros((0, 5), np.float32)) for r in prep.records]
    relabelled = records_with_labels(cfg.data, None, bare, prep.nc)
    for a, b in zip(relabelled, prep.records):
        np.testing.assert_array_equal(a.labels, b.labels)
    gt = coco_ground_truth(cfg.data, None, relabelled, prep.names, single_cls=True)
    assert gt.gt.category_ids.tolist() == [0] and gt.names == {0: "item"}  # class_map[0], as val.py numbers it
    assert len(gt.gt.ann_ids) == sum(len(r.labels) for r in prep.records)
    one_class = _with_dets(out, lambda d: torch.cat((d[:, :5], torch.zeros_like(d[:, 5:])), 1))
    coco = _single(gt, one_class, tmp_path / "p.json")
    ref = reference_evaluate("pycocotools", gt.source, tmp_path / "p.json")
    np.testing.assert_allclose(coco["stats"], ref.stats, rtol=0, atol=1e-12)
    assert list(coco["per_class_ap"]) == ["item"]


def test_class_map_rule():
    assert coco_class_map(["a", "b"], [Path("/d/coco/val2017.txt")]) == (list(COCO80_TO_91), True)
    ids, is_coco = coco_class_map(["a", "b"], [Path("/d/other/val2017.txt")])
    assert not is_coco and ids[:3] == [0, 1, 2] and len(ids) == 1000
    ids, is_coco = coco_class_map(COCO80_NAMES, [Path("/d/coco128/images/train2017")])  # val.py: class indices
    assert not is_coco and ids[:80] == list(range(80))


def test_two_images_with_one_id_are_refused(run, tmp_path):
    cfg, prep, _ = run
    a, b = prep.records[:2]
    twin = ImageRecord(tmp_path / a.path.name, b.shape_hw, b.labels)
    with pytest.raises(DetvalError, match="both be COCO image id"):
        coco_ground_truth(cfg.data, None, [a, twin], prep.names)


def test_coco_json_image_of_another_size_is_excluded(data_dir, tmp_path):
    images = data_dir / "coco128" / "images" / "train2017"
    (tmp_path / "i.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000000000009.jpg", "width": 640, "height": 480},
                   {"id": 2, "file_name": "000000000025.jpg", "width": 640, "height": 480}],  # really 640x426
        "categories": [{"id": 1, "name": "person"}], "annotations": []}))
    split = read_coco_json_split(tmp_path / "i.json", images)
    assert [r.path.name for r in split.records] == ["000000000009.jpg"]
    assert "is 640x426" in split.excluded[0].reason and "says 640x480" in split.excluded[0].reason
    with pytest.raises(DetvalError, match="--images"):
        read_coco_json_split(tmp_path / "i.json", None)


def test_coco_json_without_a_usable_image_is_a_clear_error(data_dir, tmp_path):
    (tmp_path / "i.json").write_text(json.dumps({
        "images": [{"id": 2, "file_name": "000000000025.jpg", "width": 640, "height": 480}],  # really 640x426
        "categories": [{"id": 1, "name": "person"}], "annotations": []}))
    with pytest.raises(DetvalError, match=r"i\.json: no usable image .*says 640x480"):
        read_coco_json_split(tmp_path / "i.json", data_dir / "coco128" / "images" / "train2017")
