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


def test_coco128_plan_at_640_has_four_batches(data_dir):
    from detval.data import list_images, load_data_config, scan_images

    cfg = load_data_config(data_dir / "coco128" / "coco128.yaml")
    scan = scan_images(list_images(cfg.val), cfg.nc)
    plan = rect_batch_plan(np.array([r.shape_hw for r in scan.records]), 32, 640, 32)
    assert plan.n_batches == 4


def test_square_plan():
    plan = square_batch_plan(10, 4, 320)
    assert plan.batch_shapes.tolist() == [[320, 320]] * 3 and plan.batch(2) == [8, 9]
