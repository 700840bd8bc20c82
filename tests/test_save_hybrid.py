"""--save-hybrid: the labels join the NMS input as val.py v7.0 adds them (ops.nms.with_label_rows), against
hand-computed rows, and (slow) yolov5n on coco128 against val.py's reference run (reference_dir's
yolov5n-save-hybrid: metrics, predictions JSON, hybrid_labels/ txt files) on one process, on two and from a raw
cache made without it."""
from __future__ import annotations

import json

import pytest
import torch

import val_workers
from reference_predictions import (assert_predictions_match, assert_txt_match, by_image, reference_cfg, reference_dir,
                                   reference_json)
from detval.api import evaluate_raw, validate
from detval.commands.options import PARSERS
from detval.config import ValConfig
from detval.inference import select
from detval.ops.nms import NmsConfig, with_label_rows
from detval.run import setting_warnings


def test_label_rows_follow_the_candidates_with_conf_1_and_their_class():
    cands = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.5, 3.0]])
    labels = torch.tensor([[2.0, 50.0, 60.0, 20.0, 10.0], [7.0, 5.0, 5.0, 2.0, 4.0]])  # cls, cx, cy, w, h
    assert with_label_rows(cands, labels).tolist() == [[0.0, 0.0, 10.0, 10.0, 0.5, 3.0],
                                                       [40.0, 55.0, 60.0, 65.0, 1.0, 2.0],
                                                       [4.0, 3.0, 6.0, 7.0, 1.0, 7.0]]
    assert with_label_rows(cands, labels[:0]) is cands
    assert with_label_rows(cands[:0], labels[:1]).tolist() == [[40.0, 55.0, 60.0, 65.0, 1.0, 2.0]]


def test_a_label_suppresses_the_detections_it_overlaps_and_the_threshold_applies_to_it():
    cands = [torch.tensor([[40.0, 55.0, 60.0, 66.0, 0.875, 2.0],   # IoU 0.91 with the label, same class: suppressed
                           [40.0, 55.0, 60.0, 66.0, 0.75, 5.0],   # same box, another class: kept
                           [0.0, 0.0, 10.0, 10.0, 0.25, 2.0]])]   # elsewhere: kept
    labels = [torch.tensor([[2.0, 50.0, 60.0, 20.0, 10.0]])]
    dets = select(cands, NmsConfig(), False, labels)[0]
    assert dets.tolist() == [[40.0, 55.0, 60.0, 65.0, 1.0, 2.0], [40.0, 55.0, 60.0, 66.0, 0.75, 5.0],
                             [0.0, 0.0, 10.0, 10.0, 0.25, 2.0]]
    assert select(cands, NmsConfig(), False)[0].shape[0] == 3
    # val.py applies conf_thres to the label rows too (1.0 > 1.0 is false)
    assert select(cands, NmsConfig(conf_thres=1.0), False, labels)[0].shape[0] == 0


def test_val_pys_command_line_rules():
    assert ValConfig(weights="w.pt", data="d.yaml", save_hybrid=True).save_txt
    assert not ValConfig(weights="w.pt", data="d.yaml").save_txt
    # and, as its parse_opt too, a data file named coco.yaml turns on --save-json
    assert ValConfig(weights="w.pt", data="data/coco.yaml").save_json
    assert not ValConfig(weights="w.pt", data="data/coco128.yaml").save_json
    warnings = setting_warnings(ValConfig(weights="w.pt", data="d.yaml", save_hybrid=True, conf_thres=0.25))
    assert [w.split()[0] for w in warnings] == ["confidence", "--save-hybrid"]
    assert setting_warnings(ValConfig(weights="w.pt", data="d.yaml")) == []
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for name in ("val", "eval"):
        PARSERS[name](sub)
    assert parser.parse_args(["val", "--weights", "w", "--data", "d", "--save-hybrid"]).save_hybrid
    assert parser.parse_args(["eval", "--raw", "r", "--save-hybrid"]).save_hybrid


# --- yolov5n on coco128 against val.py v7.0 ----------------------------------------------------------------------

def _cfg(data_dir, root, name, **kw) -> ValConfig:
    return reference_cfg(data_dir, root, name, **{**dict(save_hybrid=True, save_conf=True), **kw})


@pytest.fixture(scope="module")
def one(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    return root, validate(_cfg(data_dir, root, "one"))


@pytest.mark.slow
def test_metrics_predictions_and_txt_files_are_val_pys(data_dir, one):
    root, result = one
    case = reference_dir(data_dir, "yolov5n-save-hybrid")
    ref = json.loads((case / "metrics.json").read_text())
    saved = json.loads((result.run_dir / "results.json").read_text())
    for key in ("P", "R", "mAP50", "mAP50-95"):
        assert abs(saved["metrics"][key] - ref[key]) < 1e-6, key
    assert max(abs(a - b) for a, b in zip(saved["maps"], ref["maps_per_class_mAP50-95"])) < 1e-6
    got = by_image(json.loads((result.run_dir / "yolov5n_predictions.json").read_text()))
    assert_predictions_match(reference_json(case), got)
    assert_txt_match(case / "hybrid_labels", result.run_dir / "labels")


@pytest.mark.slow
def test_two_processes_and_a_raw_cache_made_without_it_give_the_same_digits(data_dir, one, tmp_path):
    """The labels join at NMS time, so a cache of an ordinary run re-evaluates with --save-hybrid."""
    root, result = one
    expected = val_workers.run_outcome(result.run_dir)
    two = validate(_cfg(data_dir, tmp_path, "two", nproc=2))
    val_workers.assert_same_outcome(val_workers.run_outcome(two.run_dir), expected)
    plain = validate(_cfg(data_dir, tmp_path, "plain", save_hybrid=False, save_json=False,
                          save_raw=str(tmp_path / "raw")))
    assert plain.map < 0.5  # yolov5n alone: 0.363 (reference yolov5n-coco128-default)
    again = evaluate_raw(_cfg(data_dir, tmp_path, "again", weights="", data="", save_raw=str(tmp_path / "raw")))
    val_workers.assert_same_outcome(val_workers.run_outcome(again.run_dir), expected)
