import torch

from detval.ops.boxes import box_iou, scale_boxes_, xywh2xyxy, xyxy2xywh


def test_xywh_xyxy_round_trip():
    b = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    assert xywh2xyxy(b).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert xyxy2xywh(xywh2xyxy(b)).tolist() == b.tolist()


def test_box_iou_matches_hand_computation_with_eps():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 2)
    assert abs(iou[0, 0].item() - 2 / (6 + 1e-7)) < 1e-7 and iou[0, 1] == 0


def test_scale_boxes_removes_padding_divides_gain_and_clips():
    b = torch.tensor([[16.0, 10.0, 116.0, 1000.0]])
    scale_boxes_(b, 0.5, (16.0, 10.0), (300, 400))
    assert b.tolist() == [[0.0, 0.0, 200.0, 300.0]]
