import numpy as np
import pytest

from detval.metrics.ap import _trapezoid, ap_per_class, compute_ap, smooth
from detval.metrics.summary import detection_metrics


def test_compute_ap_perfect_and_half():
    # YOLOv5's envelope ends at (recall 1, precision 0), so a perfect detector scores 0.995, not 1
    ap, _, _ = compute_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    assert ap == pytest.approx(0.995)
    # precision 1 up to recall 0.5, then the envelope falls linearly to (1, 0): 0.5 + 0.25
    ap, _, _ = compute_ap(np.array([0.5]), np.array([1.0]))
    assert ap == pytest.approx(0.75)


def test_smooth_keeps_constant_signal():
    assert np.allclose(smooth(np.full(1000, 0.3), 0.1), 0.3)


def test_ap_per_class_hand_case():
    # class 0: 2 labels, detections (conf desc) TP, FP, TP -> AP@0.5 from P/R points (0.5,1), (1, 2/3)
    tp = np.array([[True], [False], [True]])
    conf = np.array([0.9, 0.8, 0.7])
    cls = np.array([0.0, 0.0, 0.0])
    res = ap_per_class(tp, conf, cls, np.array([0.0, 0.0]))
    x = np.linspace(0, 1, 101)
    env = np.where(x <= 0.5, 1.0, 2 / 3)
    env[-1] = 0.0  # the sentinel (1, 0) point, as above
    env[50] = 2 / 3  # at recall exactly 0.5 the envelope steps down; np.interp takes the right-hand value
    assert res.ap[0, 0] == pytest.approx(_trapezoid(env, x))
    assert res.classes.tolist() == [0]


def test_classes_without_labels_are_skipped_and_maps_filled_with_mean():
    tp = np.array([[True] * 10, [False] * 10])
    conf = np.array([0.9, 0.8])
    cls = np.array([1.0, 2.0])  # class 2 has no labels
    m = detection_metrics(tp, conf, cls, np.array([1.0]), nc=3)
    assert m.per_class.classes.tolist() == [1]
    assert m.maps[1] == pytest.approx(m.map)
    assert m.maps[0] == m.maps[2] == m.map
    assert m.nt.tolist() == [0, 1, 0]


def test_no_true_positive_gives_zeros():
    m = detection_metrics(np.zeros((1, 10), bool), np.array([0.5]), np.array([0.0]), np.array([0.0]), nc=1)
    assert (m.mp, m.mr, m.map50, m.map) == (0.0, 0.0, 0.0, 0.0) and m.per_class is None
