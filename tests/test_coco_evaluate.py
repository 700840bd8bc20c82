"""detval.coco.evaluate against pycocotools: identical floats on sets built to hit every COCOeval rule."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from coco_synth import SynthSpec, coco128_as_coco, make_coco_set
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detval.coco.format import load_coco_dets, load_coco_gt
from detval.coco.evaluate import (FP, IGNORED, STAT_NAMES, TP, CocoParams, PerImageEval, _min_count_reaching,
                                      accumulate, box_iou_coco, category_shares, coco_evaluate, evaluate_images,
                                      format_summary, greedy_match, join_categories, merge, select_categories,
                                      summarize)
from detval.coco.reference import reference_evaluate

SPECS = {
    "default": SynthSpec(seed=0),
    "string-ids": SynthSpec(seed=1, string_ids=True),
    "gt-id-0": SynthSpec(seed=2, gt_id_zero=True),
    "dense-crowds": SynthSpec(seed=3, n_images=15, gt_per_image=30, crowd_frac=0.3, duplicate_gt_frac=0.15,
                              dets_per_image=120, score_decimals=1),
    "yolo-like": SynthSpec(seed=4, n_images=30, n_cats=10, dets_per_image=100, score_decimals=5),
}


def assert_same_result(ours, ref):
    np.testing.assert_array_equal(ours.stats, ref.stats)
    assert ours.per_class_ap == ref.per_class_ap
    for name in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(getattr(ours.accumulated, name), getattr(ref.accumulated, name), err_msg=name)


@pytest.fixture(scope="module", params=list(SPECS))
def synth(request):
    gt_dict, dets = make_coco_set(SPECS[request.param])
    gt = load_coco_gt(gt_dict)
    return gt_dict, dets, gt, load_coco_dets(dets, gt)


def test_matches_pycocotools(synth):
    gt_dict, dets_list, gt, dets = synth
    assert_same_result(coco_evaluate(gt, dets), reference_evaluate("pycocotools", gt_dict, dets_list))


@pytest.mark.parametrize("workers", [2, 3])
def test_categories_split_over_forked_workers_give_the_same_result(synth, workers):
    gt_dict, dets_list, gt, dets = synth
    assert_same_result(coco_evaluate(gt, dets, workers=workers), reference_evaluate("pycocotools", gt_dict, dets_list))


@pytest.mark.parametrize("entries", [1, 5000])
def test_categories_accumulated_in_small_padded_batches_give_the_same_result(synth, entries, monkeypatch):
    """Categories of similar size are accumulated together, padded, in batches of about _BATCH_ENTRIES status
    entries: batches of one category (entries 1) or of a few give pycocotools' numbers too."""
    import detval.coco.evaluate as evaluate

    monkeypatch.setattr(evaluate, "_BATCH_ENTRIES", entries)
    gt_dict, dets_list, gt, dets = synth
    assert_same_result(coco_evaluate(gt, dets), reference_evaluate("pycocotools", gt_dict, dets_list))


def test_matches_pycocotools_with_img_and_cat_restriction(synth):
    gt_dict, dets_list, gt, dets = synth
    unknown = "no such image" if isinstance(gt_dict["images"][0]["id"], str) else 10 ** 9
    img_ids = [im["id"] for im in gt_dict["images"]][::2] + [unknown]
    cat_ids = [c["id"] for c in gt_dict["categories"]][1:4] + [999]   # 999: a category nobody has
    ours = coco_evaluate(gt, dets, img_ids=img_ids, cat_ids=cat_ids)
    assert_same_result(ours, reference_evaluate("pycocotools", gt_dict, dets_list, img_ids=img_ids, cat_ids=cat_ids))
    assert ours.per_class_ap[999] == -1.0


def test_evaluate_images_matches_pycocotools_per_image(synth):
    """The per-(image, category, area) phase alone: every detection's TP/FP/ignored flag at every threshold."""
    gt_dict, dets_list, gt, dets = synth
    ref = COCO()
    ref.dataset = {**gt_dict, "annotations": [dict(a) for a in gt_dict["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):
        ref.createIndex()
        ev = COCOeval(ref, ref.loadRes([dict(d) for d in dets_list]), "bbox")
        ev.evaluate()
    ours = evaluate_images(gt, dets)
    areas = [tuple(a) for a in ev.params.areaRng]
    det_group = ours.det_img * 10 ** 6 + ours.det_cat
    gt_group = ours.gt_img * 10 ** 6 + ours.gt_cat
    checked = 0
    for e in ev.evalImgs:
        if e is None:
            continue
        img, cat, a = gt.image_index([e["image_id"]])[0], e["category_id"], areas.index(tuple(e["aRng"]))
        rows = np.flatnonzero(det_group == img * 10 ** 6 + cat)
        expected = np.where(e["dtIgnore"], IGNORED, np.where(e["dtMatches"] > 0, TP, FP)).T
        np.testing.assert_array_equal(ours.det_status[rows, a], expected)
        np.testing.assert_array_equal(ours.det_rank[rows], np.arange(len(rows)))
        np.testing.assert_array_equal(ours.det_score[rows], e["dtScores"])
        g = np.flatnonzero(gt_group == img * 10 ** 6 + cat)
        assert (ours.gt_count[g, a].sum() if len(g) else 0) == np.count_nonzero(e["gtIgnore"] == 0)
        checked += 1
    assert checked > 100


def test_split_and_merge_equals_whole(synth):
    _, _, gt, dets = synth
    params = CocoParams.for_gt(gt)
    whole = evaluate_images(gt, dets, None, params)
    rng = np.random.default_rng(0)
    owner = rng.integers(0, 3, len(gt.image_ids))
    parts = [evaluate_images(gt, dets, gt.image_ids[owner == r].tolist(), params) for r in range(3)]
    merged = merge([PerImageEval.from_arrays(p.as_arrays()) for p in parts[::-1]])
    for name, arr in whole.as_arrays().items():
        np.testing.assert_array_equal(getattr(merged, name), arr, err_msg=name)
    np.testing.assert_array_equal(summarize(accumulate(merged, params)), summarize(accumulate(whole, params)))


@pytest.mark.parametrize("n", [1, 3, 7])
def test_accumulating_category_shares_apart_equals_the_whole(synth, n):
    """Each category accumulates on its own: shares evaluated and accumulated apart join to the whole, bit for bit."""
    _, _, gt, dets = synth
    params = CocoParams.for_gt(gt)
    whole = accumulate(evaluate_images(gt, dets, None, params), params)
    shares = category_shares(params, n)
    assert sorted(c for sh in shares for c in sh.cat_ids.tolist()) == params.cat_ids.tolist()
    joined = join_categories(params, [accumulate(evaluate_images(gt, dets, None, sh), sh) for sh in shares[::-1]])
    for name in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(summarize(joined), summarize(whole))
    per_image = evaluate_images(gt, dets, None, params)
    for sh in shares:  # rows of a category share picked from the whole equal the share evaluated alone
        picked, alone = select_categories(per_image, sh.cat_ids), evaluate_images(gt, dets, None, sh)
        for name, arr in alone.as_arrays().items():
            np.testing.assert_array_equal(getattr(picked, name), arr, err_msg=name)
    if n > 1:  # a part with categories outside the target's
        with pytest.raises(ValueError, match="categories"):
            join_categories(shares[0], [whole])


def test_merge_rejects_overlapping_parts():
    gt_dict, dets = make_coco_set(SynthSpec(n_images=6, seed=5))
    gt = load_coco_gt(gt_dict)
    d = load_coco_dets(dets, gt)
    ids = gt.image_ids.tolist()
    with pytest.raises(ValueError, match="share images"):
        merge([evaluate_images(gt, d, ids[:4]), evaluate_images(gt, d, ids[3:])])


def test_box_iou_is_bit_identical_to_pycocotools():
    rng = np.random.default_rng(1)
    dt = np.round(rng.random((300, 4)) * [100, 100, 60, 60], 3)
    gt = np.round(rng.random((40, 4)) * [100, 100, 60, 60], 2)
    crowd = rng.random(40) < 0.3
    ref = np.array(mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist()))
    d, g = np.repeat(np.arange(300), 40), np.tile(np.arange(40), 300)
    ours = box_iou_coco(dt[d], gt[g], crowd[g]).reshape(300, 40)
    assert (ref > 0).sum() > 1000
    np.testing.assert_array_equal(ours, ref)


def test_greedy_match_rules():
    """One group, GT columns: 0 regular, 1 ignored (area), 2 crowd; thresholds .5 and .9."""
    iou = np.array([[0.6, 0.95, 0.97],     # a regular GT beats better ignored ones
                    [0.95, 0.0, 0.8],      # GT 0 is taken at .5: falls to the crowd; at .9 takes GT 0
                    [0.0, 0.0, 0.93]])     # the crowd matches again
    ignore = np.array([[[False, True, True]]])
    crowd = np.array([[False, False, True]])
    match = greedy_match(iou, np.array([3]), ignore, crowd, np.array([0.5, 0.9]))
    np.testing.assert_array_equal(match[:, 0, :], [[0, 2], [2, 0], [2, 2]])


def test_greedy_match_takes_the_last_of_equal_ious():
    iou = np.array([[0.7, 0.7, 0.6]])
    match = greedy_match(iou, np.array([1]), np.zeros((1, 1, 3), bool), np.zeros((1, 3), bool), np.array([0.5]))
    assert match[0, 0, 0] == 1


def test_min_count_reaching_is_exact():
    thr = np.linspace(.0, 1.00, 101)
    n = np.arange(1, 400)
    c = _min_count_reaching(thr, n)
    for i, ni in enumerate(n):
        rc = np.arange(ni + 1) / ni
        np.testing.assert_array_equal(c[i], np.searchsorted(rc, thr, side="left"))


def test_format_summary_prints_what_pycocotools_prints():
    gt_dict, dets = make_coco_set(SynthSpec(seed=6, n_images=10))
    gt = load_coco_gt(gt_dict)
    ours = coco_evaluate(gt, load_coco_dets(dets, gt))
    ref = COCO()
    ref.dataset = gt_dict
    with contextlib.redirect_stdout(io.StringIO()):
        ref.createIndex()
        ev = COCOeval(ref, ref.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.summarize()
    assert format_summary(ours.stats) == out.getvalue().rstrip("\n")
    assert ours.summary() == format_summary(ours.stats)
    assert list(ours.stats_dict()) == list(STAT_NAMES)
    assert ours.ap == ours.stats[0] and ours.ap50 == ours.stats[1]


def test_no_detections():
    gt_dict, _ = make_coco_set(SynthSpec(seed=7, n_images=8))
    gt = load_coco_gt(gt_dict)
    res = coco_evaluate(gt, load_coco_dets([], gt))
    # with GT and nothing detected, precision and recall are 0 wherever GT exists, -1 elsewhere
    assert res.stats[0] == 0 and res.stats[8] == 0
    assert set(res.stats.tolist()) <= {0.0, -1.0}
    cats_with_gt = {a["category_id"] for a in gt_dict["annotations"]}
    assert {c for c, ap in res.per_class_ap.items() if ap == 0.0} == cats_with_gt
    assert all(ap == -1.0 for c, ap in res.per_class_ap.items() if c not in cats_with_gt)


def test_matches_pycocotools_on_coco128_yolov5n_predictions():
    """Real data: coco128 labels as COCO GT, the reference yolov5n predictions (6 significant digits) as
    detections through the YOLOv5 JSON export."""
    gt_dict, dets, _ = coco128_as_coco()
    assert len(gt_dict["annotations"]) == 929 and len(dets) > 20000
    gt = load_coco_gt(gt_dict)
    ours = coco_evaluate(gt, load_coco_dets(dets, gt))
    assert_same_result(ours, reference_evaluate("pycocotools", gt_dict, dets))
    assert 0.3 < ours.ap < 0.45   # yolov5n on coco128: val.py reports mAP50-95 0.363


def _cocoeval_cli(capsys, *argv):
    from detval.cli import main

    rc = main(["cocoeval", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cocoeval_command(tmp_path, capsys):
    import json

    gt_dict, dets = make_coco_set(SynthSpec(seed=8, n_images=12))
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    ref = reference_evaluate("pycocotools", gt_dict, dets)

    rc, out, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json")
    assert rc == 0 and out == format_summary(ref.stats) + "\n"
    rc, out_py, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json",
                                  "--backend", "pycocotools")
    assert rc == 0 and out_py == out

    rc, out, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--json")
    data = json.loads(out)
    assert list(data["stats"].values()) == ref.stats.tolist() and list(data["stats"]) == list(STAT_NAMES)
    names = {c["id"]: c["name"] for c in gt_dict["categories"]}
    assert data["per_class_ap"] == {names[c]: ap for c, ap in ref.per_class_ap.items()}

    rc, out, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--json",
                               "--backend", "faster-coco-eval")
    # faster-coco-eval's precision can differ from pycocotools' in the last bit
    np.testing.assert_allclose(list(json.loads(out)["stats"].values()), ref.stats, rtol=0, atol=1e-12)

    (tmp_path / "bad.json").write_text("[{")
    rc, out, err = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "bad.json")
    assert rc == 2 and "bad.json" in err and out == ""

    rc, out_uf, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--backend", "ultrafast")
    assert rc == 0 and out_uf == format_summary(ref.stats) + "\n"

    rc, out_w, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--json", "--workers", "3")
    assert rc == 0 and out_w == _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--json")[1]
    rc, _, err = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--workers", "-1")
    assert rc == 2 and "--workers" in err


@pytest.mark.parametrize("backend, workers", [("detval", "1"), ("detval", "2"), ("pycocotools", "2"),
                                             ("faster-coco-eval", "1"), ("ultrafast", "1")])
@pytest.mark.parametrize("dets, message", [
    ('{"image_id": 1}', "must be a JSON list of objects, not dict"),
    ('[{"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}]', "not in .*image_id 99"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": NaN}]', "score nan"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, -2, 1], "score": 0.5}]', "negative width or height"),
])
def test_cocoeval_bad_input_is_one_line_and_exit_2_for_every_backend(tmp_path, capsys, backend, workers, dets,
                                                                      message):
    import json
    import re

    (tmp_path / "gt.json").write_text(json.dumps({"images": [{"id": 1}], "categories": [{"id": 3, "name": "c"}],
                                                  "annotations": [{"id": 1, "image_id": 1, "category_id": 3,
                                                                   "bbox": [0, 0, 5, 5], "area": 25}]}))
    (tmp_path / "dt.json").write_text(dets)
    rc, out, err = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--backend", backend,
                                 "--workers", workers)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_cocoeval_empty_detections(tmp_path, capsys):
    import json

    gt_dict, _ = make_coco_set(SynthSpec(seed=9, n_images=5))
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "dt.json").write_text("[]")
    rc, out, _ = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--json")
    assert rc == 0 and json.loads(out)["stats"]["AP"] == 0.0
    rc, out, err = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json", "--backend", "pycocotools")
    assert rc == 2 and "no detections" in err and "Traceback" not in err


def test_cocoeval_warns_about_a_ground_truth_without_annotations(tmp_path, capsys):
    import json

    gt_dict, dets = make_coco_set(SynthSpec(seed=10, n_images=5))
    del gt_dict["annotations"]
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    rc, out, err = _cocoeval_cli(capsys, tmp_path / "gt.json", tmp_path / "dt.json")
    assert rc == 0 and "WARNING" in err and "gt.json has no annotations" in err
    assert "= -1.000" in out


def test_compact_form_round_trips(synth):
    """evaluate_images' PerImageEval and the compact form accumulate reads hold the same statuses."""
    from detval.coco.evaluate import _evaluate, _evaluated, _per_image

    _, _, gt, dets = synth
    params = CocoParams.for_gt(gt)
    ev = _evaluate(gt, dets, None, params)
    per_image = _per_image(ev)
    again = _per_image(_evaluated(per_image))
    for name, arr in per_image.as_arrays().items():
        np.testing.assert_array_equal(getattr(again, name), arr, err_msg=name)
    assert len(ev.special) < len(per_image.det_score)
