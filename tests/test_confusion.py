import numpy as np
import torch

from detval.metrics.confusion import confusion_update


def test_confusion_counts_correct_confused_missed_and_false_alarm():
    m = np.zeros((3, 3))
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 20.0, 0.0, 30.0, 10.0], [1, 50.0, 50.0, 60.0, 60.0]])
    dets = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 0],     # correct class 0
                         [20.0, 0.0, 30.0, 10.0, 0.9, 0],    # label 1 predicted as 0
                         [80.0, 80.0, 90.0, 90.0, 0.9, 1],   # false alarm
                         [50.0, 50.0, 60.0, 60.0, 0.1, 1]])  # below conf 0.25: ignored -> label 2 missed
    confusion_update(m, dets, labels)
    assert m[0, 0] == 1 and m[0, 1] == 1 and m[2, 1] == 1 and m[1, 2] == 1
    assert m.sum() == 4


def test_no_detections_counts_all_labels_missed():
    m = np.zeros((3, 3))
    confusion_update(m, None, torch.tensor([0.0, 1.0, 1.0]))
    assert m[2].tolist() == [1, 2, 0]
