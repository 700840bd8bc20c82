"""--augment (test-time augmentation), model/augment.py: the pure steps against hand-computed values, a model's TTA
forward with the same bits at 1 and 2 threads, the raw-cache key, and (slow) yolov5n on coco128 against val.py
v7.0's reference run (reference_dir's yolov5n-augment) on one process, on two and from the raw cache."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import val_workers
from reference_predictions import assert_predictions_match, by_image, reference_cfg, reference_dir, reference_json
from reference_runs import dropped_by_time_limit
from detval import distributed
from detval.api import evaluate_raw, validate
from detval.cache.raw_outputs import RawCache, RawKey
from detval.config import ValConfig
from detval.errors import DetvalError
from detval.evaluation import ImageBatch
from detval.evaluation.yolo import YoloEvaluator
from detval.inference import StageTimes, cached_batches
from detval.model.augment import augmented_forward, clip_augmented, descale_pred, scale_img, scaled_size
from detval.model.split_sigmoid import REFERENCE_THREADS, torch_threads
from detval.model.yolo import DetectionModel
from detval.ops.nms import NmsConfig


# --- the pure steps ----------------------------------------------------------------------------------------------

def test_scaled_size_truncates_then_pads_to_the_stride():
    assert scaled_size(480, 640, 0.83, 32) == ((398, 531), (416, 544))  # 398.4, 531.2 -> 13 x 16.6 strides -> 13, 17
    assert scaled_size(480, 640, 0.67, 32) == ((321, 428), (352, 448))  # 321.6, 428.8 -> 10.05, 13.4 -> 11, 14
    assert scaled_size(672, 672, 0.67, 64) == ((450, 450), (512, 512))


def test_scale_img_resizes_bilinearly_and_pads_with_0447():
    img = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    out = scale_img(img, 0.5, gs=4)  # 2 x 2 (each the mean of a 2 x 2 block), padded to 4 x 4
    p = 0.447
    expected = torch.tensor([[2.5, 4.5, p, p], [10.5, 12.5, p, p], [p, p, p, p], [p, p, p, p]])
    assert torch.equal(out[0, 0], expected)
    assert scale_img(img, 1.0) is img


def test_scale_img_has_val_pys_bits_at_any_thread_count():
    """val.py interpolates the 3-channel batch at 2 threads (torch's generic kernel); at 1 thread torch would pick
    its channels-last kernel for 3 channels, which rounds differently. scale_img gives the former at 1, 2, 3."""
    x = torch.rand(4, 3, 96, 160, generator=torch.Generator().manual_seed(0))
    with torch_threads(REFERENCE_THREADS):
        ref = F.pad(F.interpolate(x, size=(79, 132), mode="bilinear", align_corners=False), [0, 28, 0, 17],
                    value=0.447)
    with torch_threads(1):
        plain = F.interpolate(x, size=(79, 132), mode="bilinear", align_corners=False)
    assert not torch.equal(plain, ref[..., :79, :132])  # what a plain call at 1 thread would give: other bits
    for threads in (1, 2, 3):
        with torch_threads(threads):
            assert torch.equal(scale_img(x, 0.83), ref), threads


def test_descale_pred_divides_boxes_and_mirrors_the_flipped_axis():
    p = torch.tensor([[[10.0, 20.0, 4.0, 6.0, 0.5, 0.25]]])
    assert descale_pred(p.clone(), None, 0.5, (100, 200)).tolist() == [[[20.0, 40.0, 8.0, 12.0, 0.5, 0.25]]]
    assert descale_pred(p.clone(), 3, 0.5, (100, 200)).tolist() == [[[180.0, 40.0, 8.0, 12.0, 0.5, 0.25]]]
    assert descale_pred(p.clone(), 2, 0.5, (100, 200)).tolist() == [[[20.0, 60.0, 8.0, 12.0, 0.5, 0.25]]]
    q = p.clone()
    assert descale_pred(q, 3, 0.5, (100, 200)) is q  # in place, as v7.0 (inplace=True)


def test_clip_augmented_drops_the_large_level_of_the_first_pass_and_the_small_one_of_the_last():
    # 3 levels of 16, 4 and 1 cells (x2: 42 rows) per pass; rows numbered
    y = [torch.arange(42.0).view(1, 42, 1) + 100 * k for k in range(3)]
    a, b, c = clip_augmented(y, nl=3)
    assert a[0, :, 0].tolist() == list(range(40))  # the last level's 2 rows dropped
    assert torch.equal(b, y[1])
    assert c[0, :, 0].tolist() == [200.0 + r for r in range(32, 42)]  # the first level's 32 rows dropped


def test_augmented_forward_runs_three_passes_flipping_the_second():
    """A stand-in forward reports each pass's input: its width as cx, height as cy, its top-left pixel as the score.
    On a ramp along the width, only the flipped pass starts from the right-hand end."""
    x = torch.arange(96.0).repeat(1, 3, 64, 1)  # [1, 3, 64, 96], pixel value = its column

    def forward(xi):
        row = torch.tensor([xi.shape[3], xi.shape[2], 1.0, 1.0, float(xi[0, 0, 0, 0])])
        return row.repeat(1, 21, 1)  # 16 + 4 + 1 rows, as 3 levels

    out = augmented_forward(forward, x, gs=32, nl=3)
    assert out.shape == (1, 20 + 21 + 5, 5)
    first, second, third = out[0, 0], out[0, 20], out[0, 41]
    assert first.tolist() == [96.0, 64.0, 1.0, 1.0, 0.0]
    # 0.83: 53 x 79 resized, padded to 64 x 96; cx = W - 96 / 0.83, cy = 64 / 0.83 (float32 IEEE division)
    s = np.float32(0.83)
    assert second[:4].numpy().tolist() == [96 - np.float32(96) / s, np.float32(64) / s, np.float32(1) / s, np.float32(1) / s]
    assert abs(second[4].item() - (95 - (0.5 * 96 / 79 - 0.5))) < 1e-4  # bilinear sample near the right end
    t = np.float32(0.67)
    assert third[:4].numpy().tolist() == [np.float32(96) / t, np.float32(64) / t, np.float32(1) / t, np.float32(1) / t]
    assert abs(third[4].item() - (0.5 * 96 / 64 - 0.5)) < 1e-4


def test_a_models_tta_forward_has_the_same_bits_at_1_and_2_threads():
    torch.manual_seed(0)
    model = DetectionModel("yolov5n").fuse().eval()
    x = torch.rand(3, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = {}
        for threads in (1, 2):
            with torch_threads(threads):
                outs[threads] = model(x, augment=True)
        plain = model(x)
    assert model.chunk_plan(x) is not None  # the exact path ran (not torch's thread-dependent plain forward)
    assert torch.equal(outs[1], outs[2])
    # 3 anchors x (12x16 + 6x8 + 3x4) = 756 rows at 96 x 128 (passes 1 and 2), 3 x (12x12 + 6x6 + 3x3) = 567 at
    # 96 x 96 (pass 3: 64 x 85 padded); kept: 756 - 36, 756, 567 - 432
    assert plain.shape[1] == 756 and outs[1].shape[1] == 720 + 756 + 135
    assert torch.equal(outs[1][:, :720], plain[:, :720])


def test_raw_cache_key_records_augment(tmp_path):
    key = RawKey(weights_sha256="w", images_sha256="i", imgsz=640, batch_size=32, task="val", half=False,
                 store_conf=0.001, augment=True)
    RawCache(tmp_path, key, meta={})
    with pytest.raises(DetvalError, match="augment: cached True, now False"):
        RawCache(tmp_path, replace(key, augment=False))
    assert RawCache.open_existing(tmp_path).key.augment is True
    manifest = tmp_path / "manifest.json"  # a manifest from before --augment: a run without it
    stored = json.loads(manifest.read_text())
    del stored["key"]["augment"]
    manifest.write_text(json.dumps(stored))
    assert RawCache.open_existing(tmp_path).key.augment is False
    RawCache(tmp_path, replace(key, augment=False))


# --- yolov5n on coco128 against val.py v7.0 ----------------------------------------------------------------------

def _cfg(data_dir, root, name, **kw) -> ValConfig:
    return reference_cfg(data_dir, root, name, **{**dict(augment=True, save_txt=True, save_conf=True), **kw})


@pytest.fixture(scope="module")
def one(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    result = validate(_cfg(data_dir, root, "one", save_raw=str(root / "raw")))
    return root, result


def _native_batches(raw_dir) -> list[ImageBatch]:
    raw = RawCache.open_existing(raw_dir)
    ids = range(raw.prepared().plan.n_batches)
    return [out.native() for out in cached_batches(raw, ids, NmsConfig(), False, StageTimes())]


@pytest.mark.slow
def test_metrics_and_predictions_are_val_pys(data_dir, one):
    """val.py's NMS time limit (0.5 + 0.05 x 32 s a batch; TTA triples the candidates) may empty the tail of a
    batch on a slow CPU: the shared reference lost 11 images of batch 1, which detval (no time limit) keeps. With
    the lost images' detections dropped, the metrics are val.py's; every other image's detections are val.py's."""
    root, result = one
    case = reference_dir(data_dir, "yolov5n-augment")
    ref = json.loads((case / "metrics.json").read_text())
    expected = reference_json(case)
    got = by_image(json.loads((result.run_dir / "yolov5n_predictions.json").read_text()))
    # the time limit's signature (checked there): each batch's lost images are its tail
    lost = dropped_by_time_limit(result, [p for rows in expected.values() for p in rows], root / "raw")
    batches = _native_batches(root / "raw")
    stems = [int(r.path.stem) for r in RawCache.open_existing(root / "raw").prepared().records]
    assert_predictions_match({k: v for k, v in expected.items() if k not in lost},
                             {k: v for k, v in got.items() if k not in lost})

    evaluator = YoloEvaluator(80)
    for b in batches:
        dets = [d[:0] if stems[i] in lost else d for i, d in zip(b.image_ids, b.dets)]
        evaluator.process(ImageBatch(b.image_ids, dets, b.labels))
    evaluator.gather(distributed.Comm(distributed.single_process_context()))
    m = evaluator.evaluate().metrics
    for got_value, key in ((m.mp, "P"), (m.mr, "R"), (m.map50, "mAP50"), (m.map, "mAP50-95")):
        assert abs(got_value - ref[key]) < 1e-6, key
    assert max(abs(a - b) for a, b in zip(m.maps, ref["maps_per_class_mAP50-95"])) < 1e-6


@pytest.mark.slow
def test_two_processes_give_the_same_digits(data_dir, one, tmp_path):
    """--nproc 2: one thread a rank (the single process runs two), the same files and floats."""
    root, result = one
    two = validate(_cfg(data_dir, tmp_path, "two", nproc=2))
    val_workers.assert_same_outcome(val_workers.run_outcome(two.run_dir), val_workers.run_outcome(result.run_dir))


@pytest.mark.slow
def test_raw_cache_re_evaluates_as_the_tta_run_it_holds(data_dir, one):
    root, result = one
    again = evaluate_raw(_cfg(data_dir, root, "again", weights="", data="", augment=False, save_raw=str(root / "raw")))
    val_workers.assert_same_outcome(val_workers.run_outcome(again.run_dir), val_workers.run_outcome(result.run_dir))
    assert json.loads((again.run_dir / "results.json").read_text())["settings"]["augment"] is True  # the cache's
    with pytest.raises(DetvalError, match="augment: cached True, now False"):  # resuming it without --augment
        validate(_cfg(data_dir, root, "plain", augment=False, save_raw=str(root / "raw")))
