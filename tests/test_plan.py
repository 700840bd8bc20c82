import numpy as np
import pytest

from detval.data.plan import rect_batch_plan, square_batch_plan


def test_landscape_batch_gets_short_height():
    shapes = np.array([[480, 640], [480, 640], [427, 640]])  # h, w
    plan = rect_batch_plan(shapes, batch_size=4, img_size=640, stride=32)
    # max aspect 0.75 -> 640 * 0.75 / 32 + 0.5 = 15.5 -> ceil 16 -> 512
    assert plan.batch_shapes.tolist() == [[512, 672]]
    assert plan.order[0] == 2  # the flattest image first


def test_portrait_and_mixed_batches():
    shapes = np.array([[640, 480], [500, 500], [640, 320]])
    plan = rect_batch_plan(shapes, batch_size=1, img_size=640, stride=32)
    # sorted by h / w: 1.0, 1.333, 2.0
    assert plan.order.tolist() == [1, 0, 2]
    assert plan.batch_shapes.tolist() == [[672, 672], [672, 512], [672, 352]]
    mixed = rect_batch_plan(shapes, batch_size=3, img_size=640, stride=32)
    assert mixed.batch_shapes.tolist() == [[672, 672]]  # mini <= 1 <= maxi: square


@pytest.mark.parametrize("bs", [1, 7, 16, 32])
def test_batches_cover_every_image_once_and_shapes_are_stride_multiples(bs):
    rng = np.random.default_rng(bs)
    shapes = rng.integers(100, 1000, size=(50, 2))
    plan = rect_batch_plan(shapes, bs, 640, 32)
    assert plan.n_batches == -(-50 // bs)
    seen = sorted(i for b in range(plan.n_batches) for i in plan.batch(b))
    assert seen == list(range(50))
    assert (plan.batch_shapes % 32 == 0).all() and (plan.batch_shapes <= 672).all()
    assert sorted(plan.order.tolist()) == list(range(50))


def test_hand_computed_mixed_plan_with_batch_size_2():
    # h / w: 0.5, 2.0, 1.0, 0.75, 1.333 -> sorted 0, 3, 2, 4, 1
    shapes = np.array([[300, 600], [600, 300], [400, 400], [450, 600], [640, 480]])
    plan = rect_batch_plan(shapes, 2, 640, 32)
    assert plan.order.tolist() == [0, 3, 2, 4, 1] and plan.batch_of.tolist() == [0, 0, 1, 1, 2]
    # [0.5, 0.75]: landscape, r = [0.75, 1] -> ceil(15 + .5) = 16, ceil(20 + .5) = 21 -> 512 x 672
    # [1.0, 1.333]: neither all < 1 nor all > 1 -> square 672; [2.0]: r = [1, 0.5] -> 672 x ceil(10.5) * 32 = 352
    assert plan.batch_shapes.tolist() == [[512, 672], [672, 672], [672, 352]]
    assert [b.tolist() for b in plan.batches()] == [[0, 1], [2, 3], [4]]
    assert plan.shape_of(4) == (672, 352)
    # at 320: 0.75 * 320 / 32 + 0.5 = 8.0 exactly, so no extra stride step: 256 x 352
    assert rect_batch_plan(shapes, 2, 320, 32).batch_shapes[0].tolist() == [256, 352]


def test_coco128_plan_at_640_has_four_batches(data_dir):
    from detval.data import list_images, load_data_config, scan_images

    cfg = load_data_config(data_dir / "coco128" / "coco128.yaml")
    scan = scan_images(list_images(cfg.val), cfg.nc)
    shapes = np.array([r.shape_hw for r in scan.records])
    plan = rect_batch_plan(shapes, 32, 640, 32)
    assert plan.n_batches == 4 and [len(b) for b in plan.batches()] == [32] * 4
    ar = [h / w for h, w in shapes[plan.order].tolist()]
    assert ar == sorted(ar)
    # per batch (min, max) h / w: (0.34, 0.6671875), (0.6671875, 0.75), (0.75, 1.057), (1.083, 1.783):
    # 0.6671875 * 20 + .5 -> 14 -> 448; 0.75 -> 512; mixed -> 672 square; 20 / 1.0829 + .5 = 18.97 -> 19 -> 608
    assert [(min(ar[k:k + 32]), max(ar[k:k + 32])) for k in (0, 32, 64, 96)][1] == (0.6671875, 0.75)
    assert plan.batch_shapes.tolist() == [[448, 672], [512, 672], [672, 672], [672, 608]]


def test_square_plan():
    plan = square_batch_plan(10, 4, 320)
    assert plan.batch_shapes.tolist() == [[320, 320]] * 3 and plan.batch(2) == [8, 9]
