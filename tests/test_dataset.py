import json

import numpy as np
import pytest
import torch

from detval.data import ImageRecord, ValDataset, batch_indices, collate, rect_batch_plan, scan_images


@pytest.mark.parametrize("stem", ["000000000009", "000000000030"])
def test_item_equals_yolov5_input_and_labels_bit_for_bit(data_dir, stem):
    raw = data_dir / "reference" / "yolov5n-raw"
    meta = json.loads((raw / f"{stem}_meta.json").read_text())
    scan = scan_images([data_dir / "coco128" / "images" / "train2017" / f"{stem}.jpg"], nc=80)
    plan = rect_batch_plan(np.array([r.shape_hw for r in scan.records]), 1, 640, 32)  # alone, as the reference ran
    assert plan.batch_shapes.tolist() == [meta["batch_shape_hw"]]
    image, labels, path, shapes, i = ValDataset(scan.records, plan, 640)[0]
    assert image.dtype == torch.uint8 and image.is_contiguous()
    assert torch.equal(image[None], torch.from_numpy(np.load(raw / f"{stem}_input_uint8.npy")))
    # float32 arithmetic as numpy 1.x did it; float64 arithmetic differs in the last bits of several of these
    expected = torch.tensor(meta["labels_cls_cxcywh_norm"], dtype=torch.float32)
    assert labels.dtype == torch.float32 and torch.equal(labels[:, 1:], expected) and (labels[:, 0] == 0).all()
    assert shapes == (tuple(meta["original_hw"]), (tuple(meta["letterbox_ratio"]), tuple(meta["letterbox_pad_wh"])))
    assert path.endswith(f"{stem}.jpg") and i == 0


def _record(tmp_path, name, hw, labels):
    import cv2

    p = tmp_path / "images" / f"{name}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(p), np.full((*hw, 3), 40, np.uint8))
    return ImageRecord(p, hw, np.array(labels, dtype=np.float32).reshape(-1, 5))


def test_labels_follow_resize_and_padding_and_clip_at_the_border(tmp_path):
    # 100 x 200 (h x w) at img_size 400: enlarged x2 to 200 x 400, letterboxed into 224 x 416: pad (8, 12)
    rec = _record(tmp_path, "a", (100, 200), [[1, 0.5, 0.5, 0.5, 0.5], [2, 0.95, 0.5, 0.2, 0.2]])
    plan = rect_batch_plan(np.array([rec.shape_hw]), 1, 400, 32)
    assert plan.batch_shapes.tolist() == [[224, 416]]
    image, labels, _, shapes, _ = ValDataset([rec], plan, 400)[0]  # labels [n, 6]: (0, cls, cx, cy, w, h)
    assert labels[:, 1].tolist() == [1, 2]
    assert image.shape == (3, 224, 416) and shapes == ((100, 200), ((2.0, 2.0), (8.0, 12.0)))
    # box 1: x 100..300 + 8, y 50..150 + 12 in the 416 x 224 input
    np.testing.assert_allclose(labels[0, 2:].numpy(), [208 / 416, 112 / 224, 200 / 416, 100 / 224], rtol=1e-6)
    # box 2 runs to x = 420 + 8 = 428 > 416: clipped to 416 - 0.001 before normalizing (v7.0's eps)
    x1, x2 = 340 + 8, 416 - 1e-3
    np.testing.assert_allclose(labels[1, 2:4].numpy(), [(x1 + x2) / 2 / 416, 112 / 224], rtol=1e-6)
    np.testing.assert_allclose(labels[1, 4].item(), (x2 - x1) / 416, rtol=1e-5)
    assert (image[:, :12, :] == 114).all() and (image[:, 12:212, 8:408] == 40).all()


def test_collate_and_whole_batch_subsets_through_a_dataloader(tmp_path):
    recs = [_record(tmp_path, f"{k}", (60 + 10 * k, 80), [[k % 3, 0.5, 0.5, 0.2, 0.2]] * (k % 3)) for k in range(5)]
    plan = rect_batch_plan(np.array([r.shape_hw for r in recs]), 2, 128, 32)
    recs = [recs[i] for i in plan.order]
    ds = ValDataset(recs, plan, 128)
    assert batch_indices(plan, [2, 0]) == [[4], [0, 1]]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batch_indices(plan, [2, 0]), collate_fn=collate)
    batches = list(loader)
    assert [b.indices for b in batches] == [[4], [0, 1]]
    b = batches[1]
    assert b.images.shape == (2, 3, *plan.batch_shapes[0]) and b.images.dtype == torch.uint8
    assert b.paths == [str(recs[0].path), str(recs[1].path)]
    n0, n1 = len(recs[0].labels), len(recs[1].labels)
    assert b.targets.shape == (n0 + n1, 6)
    assert b.targets[:, 0].tolist() == [0.0] * n0 + [1.0] * n1
    assert torch.equal(b.targets[:n0, 1:], ds[0][1][:, 1:]) and torch.equal(b.targets[n0:, 1:], ds[1][1][:, 1:])
    assert b.shapes == [ds[0][3], ds[1][3]]
