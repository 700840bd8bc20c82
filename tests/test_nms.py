import json

import numpy as np
import pytest
import torch

from detval.ops.boxes import scale_boxes_
from detval.ops.nms import NmsConfig, non_max_suppression


@pytest.mark.parametrize("stem", ["000000000009", "000000000030"])
def test_nms_reproduces_yolov5_on_real_raw_outputs(data_dir, stem):
    raw = data_dir / "reference" / "yolov5n-raw"
    pred = torch.from_numpy(np.load(raw / f"{stem}_pred.npy"))
    meta = json.loads((raw / f"{stem}_meta.json").read_text())
    expected = np.load(raw / f"{stem}_nms_conf0.001_iou0.6_orig_xyxy_conf_cls.npy")
    before = pred.clone()
    (det,) = non_max_suppression(pred, NmsConfig(conf_thres=0.001, iou_thres=0.6, max_det=300))
    assert torch.equal(pred, before), "NMS must not modify its input"
    scale_boxes_(det[:, :4], meta["letterbox_ratio"][0], meta["letterbox_pad_wh"], meta["original_hw"])
    assert det.shape[0] == meta["n_nms_dets"] == expected.shape[0]
    np.testing.assert_array_equal(det.numpy(), expected)


def _pred(boxes_cxcywh, obj, cls_scores):
    return torch.tensor([[list(b) + [o] + list(c) for b, o, c in zip(boxes_cxcywh, obj, cls_scores)]],
                        dtype=torch.float32)


def test_multi_label_keeps_one_box_per_class_and_class_offsets_separate_classes():
    # two overlapping boxes; box 0 scores high for both classes
    p = _pred([(50, 50, 20, 20), (51, 50, 20, 20)], [0.9, 0.8], [(0.9, 0.8), (0.5, 0.1)])
    (det,) = non_max_suppression(p, NmsConfig(conf_thres=0.25, iou_thres=0.45))
    got = sorted((int(c), round(float(s), 4)) for s, c in det[:, 4:6].tolist())
    assert got == [(0, 0.81), (1, 0.72)]  # box 1's class-0 score 0.4 suppressed by box 0's 0.81


def test_agnostic_suppresses_across_classes_and_max_det_caps():
    p = _pred([(50, 50, 20, 20), (51, 50, 20, 20)], [0.9, 0.9], [(0.9, 0.0), (0.0, 0.8)])
    (det,) = non_max_suppression(p, NmsConfig(conf_thres=0.25, iou_thres=0.45, agnostic=True))
    assert det.shape[0] == 1 and det[0, 5] == 0
    boxes = [(10 + 30 * i, 10, 20, 20) for i in range(10)]
    p = _pred(boxes, [0.9] * 10, [(0.9, 0.1)] * 10)
    (det,) = non_max_suppression(p, NmsConfig(conf_thres=0.25, iou_thres=0.45, max_det=4))
    assert det.shape[0] == 4


def test_no_candidates_gives_empty_rows():
    p = _pred([(50, 50, 20, 20)], [0.0001], [(0.5, 0.5)])
    (det,) = non_max_suppression(p, NmsConfig())
    assert det.shape == (0, 6)


@pytest.mark.parametrize("conf", [0.01, 0.1, 0.25])
def test_candidates_at_low_threshold_filter_to_a_fresh_run_at_a_higher_one(data_dir, conf):
    from detval.ops.nms import nms_candidates, nms_select

    pred = torch.from_numpy(np.load(data_dir / "reference" / "yolov5n-raw" / "000000000030_pred.npy"))
    (low,) = nms_candidates(pred, 0.001)
    (fresh,) = nms_candidates(pred, conf)
    assert torch.equal(low[low[:, 4] > conf], fresh)
    cfg = NmsConfig(conf_thres=conf, iou_thres=0.45, max_det=100)
    assert torch.equal(nms_select(low[low[:, 4] > conf], cfg), non_max_suppression(pred, cfg)[0])
