import torch

from detval.metrics.matching import IOU_THRESHOLDS, match_detections


def test_thresholds_are_coco_0_5_to_0_95():
    assert len(IOU_THRESHOLDS) == 10
    assert abs(IOU_THRESHOLDS[0].item() - 0.5) < 1e-7 and abs(IOU_THRESHOLDS[-1].item() - 0.95) < 1e-7


def test_each_label_matches_at_most_one_detection_as_v7_0_picks_it():
    # v7.0 dedups by detection first, which re-sorts the matches by detection index; the label then goes to the
    # lowest-index detection above the threshold, not the highest-IoU one. detval keeps that (exactness).
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0]])
    dets = torch.tensor([[0.0, 0.0, 10.0, 9.0, 0.5, 0],   # IoU 0.9
                         [0.0, 0.0, 10.0, 10.0, 0.4, 0],  # IoU 1.0: wins the label
                         [0.0, 0.0, 10.0, 10.0, 0.9, 1]])  # wrong class
    correct = match_detections(dets, labels)
    assert correct.shape == (3, 10)
    above_09 = IOU_THRESHOLDS <= 0.9
    assert correct[0].tolist() == above_09.tolist()
    assert correct[1].tolist() == (~above_09).tolist()
    assert not correct[2].any()


def test_partial_overlap_counts_only_below_its_iou():
    labels = torch.tensor([[2, 0.0, 0.0, 10.0, 10.0]])
    dets = torch.tensor([[0.0, 0.0, 10.0, 7.2, 0.5, 2]])  # IoU 0.72
    correct = match_detections(dets, labels)[0]
    expected = (IOU_THRESHOLDS <= 0.72)
    assert correct.tolist() == expected.tolist()


def test_two_labels_two_detections_one_each():
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [0, 20.0, 0.0, 30.0, 10.0]])
    dets = torch.tensor([[20.0, 0.0, 30.0, 10.0, 0.9, 0], [0.0, 0.0, 10.0, 10.0, 0.8, 0]])
    assert match_detections(dets, labels).all()
