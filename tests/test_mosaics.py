"""report/mosaics.py: val.py v7.0's val_batch{k}_labels.jpg / _pred.jpg."""
from dataclasses import replace

import numpy as np
from PIL import Image

from detval.api import evaluate_raw, validate
from detval.config import ValConfig
from detval.report.mosaics import Grid, build_mosaic, class_color, tile_boxes

MOSAICS = [f"val_batch{k}_{kind}.jpg" for k in range(3) for kind in ("labels", "pred")]


def test_grid_as_v7_for_a_full_batch_at_640():
    g = Grid.of(32, 640, 640)  # 16 tiles at most: 4 x 4, scaled to 1920 px
    assert (g.ns, g.scale, g.th, g.tw) == (4, 0.75, 480, 480)
    assert [g.origin(i) for i in (0, 1, 4, 15)] == [(0, 0), (0, 480), (480, 0), (1440, 1440)]  # column by column
    assert g.font_size == 38


def test_small_batches_are_not_scaled_up():
    g = Grid.of(3, 320, 480)
    assert (g.ns, g.th, g.tw) == (2, 320, 480) and g.scale == 2.0
    assert tile_boxes(np.array([[10, 20, 30, 40]]), g, 1).tolist() == [[10, 340, 30, 360]]


def test_boxes_follow_the_scale_and_the_tile():
    g = Grid.of(16, 640, 640)
    assert tile_boxes(np.array([[100, 200, 300, 400]]), g, 5).tolist() == [[555, 630, 705, 780]]


def test_mosaic_places_tiles_and_leaves_the_rest_white():
    g = Grid.of(3, 8, 6)
    tiles = [np.full((8, 6, 3), v, np.uint8) for v in (10, 20, 30)]
    m = build_mosaic(tiles, g)
    assert m.shape == (16, 12, 3)
    assert (m[:8, :6] == 10).all() and (m[8:, :6] == 20).all() and (m[:8, 6:] == 30).all()
    assert (m[8:, 6:] == 255).all()


def test_palette_is_v7s():
    assert class_color(0) == (255, 56, 56) and class_color(20) == class_color(0) and class_color(11) == (0, 194, 255)


def test_a_run_and_its_raw_re_evaluation_draw_the_same_mosaics(data_dir, tmp_path):
    cfg = ValConfig(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                    imgsz=160, batch_size=16, project=str(tmp_path), name="live", quiet=True, plots=True,
                    save_raw=str(tmp_path / "raw"))
    live = validate(cfg)
    again = evaluate_raw(replace(cfg, name="raw"))
    for name in MOSAICS:
        a, b = live.run_dir / name, again.run_dir / name
        assert a.read_bytes() == b.read_bytes(), name
        with Image.open(a) as im:
            w, h = im.size  # 4 x 4 tiles of the batch's rect shape (at most 192 px at imgsz 160), not scaled up
            assert w % 128 == 0 and h % 128 == 0 and max(w, h) <= 4 * 192, (name, im.size)
    labels, pred = (np.asarray(Image.open(live.run_dir / f"val_batch0_{k}.jpg")) for k in ("labels", "pred"))
    assert np.abs(labels.astype(int) - pred.astype(int)).mean() > 1  # boxes differ: labels vs detections
