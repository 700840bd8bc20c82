"""detval.data.agreement: ranks on nodes that mount the dataset at different paths agree; any real difference in
the images, labels or plan does not."""
from pathlib import Path

import numpy as np

from detval.data import ImageRecord
from detval.data.agreement import agreement_digest, dataset_relative_paths
from detval.data.plan import BatchPlan


def _records(root: str, label: float = 0.5) -> list[ImageRecord]:
    labels = np.array([[1, label, 0.5, 0.2, 0.3]], np.float32)
    return [ImageRecord(Path(root) / "images" / name, (480, 640), labels) for name in ("a.jpg", "b.jpg", "sub/c.jpg")]


PLAN = BatchPlan(np.arange(3), np.array([0, 0, 1]), np.array([[480, 640], [512, 640]]))


def test_paths_are_taken_relative_to_the_dataset_folder():
    assert dataset_relative_paths([r.path for r in _records("/mnt/x/coco")]) == ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert dataset_relative_paths([Path("/data/one.jpg")]) == ["one.jpg"]
    assert dataset_relative_paths([]) == []


def test_copies_at_different_paths_agree_and_real_differences_do_not():
    here = agreement_digest(_records("/mnt/node0/coco128"), PLAN)
    assert agreement_digest(_records("/scratch/node1/data/coco128"), PLAN) == here
    assert agreement_digest(_records("/mnt/node0/coco128", label=0.25), PLAN) != here  # another label
    other_plan = BatchPlan(np.arange(3), np.array([0, 1, 1]), PLAN.batch_shapes)
    assert agreement_digest(_records("/mnt/node0/coco128"), other_plan) != here
    renamed = _records("/mnt/node0/coco128")
    renamed[1] = ImageRecord(renamed[1].path.with_name("d.jpg"), renamed[1].shape_hw, renamed[1].labels)
    assert agreement_digest(renamed, PLAN) != here
