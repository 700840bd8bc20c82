import json

import numpy as np
import pytest

from detval.data.letterbox import letterbox, load_image


@pytest.mark.parametrize("stem", ["000000000009", "000000000030"])
def test_letterboxed_input_equals_yolov5_bit_for_bit(data_dir, stem):
    raw = data_dir / "reference" / "yolov5n-raw"
    meta = json.loads((raw / f"{stem}_meta.json").read_text())
    expected = np.load(raw / f"{stem}_input_uint8.npy")
    im, orig_hw, _ = load_image(data_dir / "coco128" / "images" / "train2017" / f"{stem}.jpg", 640)
    assert list(orig_hw) == meta["original_hw"]
    im, ratio, pad = letterbox(im, tuple(meta["batch_shape_hw"]))
    assert list(ratio) == meta["letterbox_ratio"] and list(pad) == meta["letterbox_pad_wh"]
    got = np.ascontiguousarray(im.transpose((2, 0, 1))[::-1])[None]
    np.testing.assert_array_equal(got, expected)


def test_load_image_shrinks_long_side_with_truncation(tmp_path):
    import cv2

    f = tmp_path / "a.png"
    cv2.imwrite(str(f), np.full((500, 381, 3), 7, np.uint8))
    im, orig, resized = load_image(f, 640)  # enlarged: 381 * 1.28 = 487.68 -> 487
    assert orig == (500, 381) and resized == (640, 487) and im.shape == (640, 487, 3)
    im, _, resized = load_image(f, 320)  # shrunk: 381 * 0.64 = 243.84 -> 243
    assert resized == (320, 243)


def test_load_image_truncation_can_lose_a_pixel_of_the_long_side(tmp_path):
    import cv2

    f = tmp_path / "a.png"
    cv2.imwrite(str(f), np.full((400, 581, 3), 7, np.uint8))
    # 640 / 581 * 581 = 639.99999... in floating point, and v7.0 truncates: 639 wide, shrink of 400 -> 440.6 -> 440
    _, orig, resized = load_image(f, 640)
    assert orig == (400, 581) and resized == (440, 639)
    im, ratio, pad = letterbox(load_image(f, 640)[0], (480, 672))
    assert im.shape == (480, 672, 3) and ratio == (1.0, 1.0) and pad == (16.5, 20.0)


def test_letterbox_shrinks_when_too_big_and_auto_pads_to_stride_only():
    im = np.full((300, 500, 3), 50, np.uint8)
    out, ratio, pad = letterbox(im, (256, 256))
    # r = min(256 / 300, 256 / 500) = 0.512 -> 256 x 153.6 -> round 154; dh = (256 - 154) / 2 = 51
    assert out.shape == (256, 256, 3) and ratio == (0.512, 0.512) and pad == (0.0, 51.0)
    out, _, pad = letterbox(im, (640, 640), auto=True, stride=32)
    # no enlarging; pads 500 -> 512 and 300 -> 320 only
    assert out.shape == (320, 512, 3) and pad == (6.0, 10.0)


def test_letterbox_splits_odd_padding_and_fills_114():
    im = np.zeros((100, 201, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, (128, 224))
    assert out.shape == (128, 224, 3) and ratio == (1.0, 1.0)
    assert (dw, dh) == (11.5, 14.0)
    # round(11.5 - 0.1) = 11 on the left, round(11.5 + 0.1) = 12 on the right
    assert (out[:, :11] == 114).all() and (out[14:114, 11] == 0).all() and (out[:, -12:] == 114).all()
    assert (out[:14] == 114).all() and (out[14:114, 11:212] == 0).all()


def test_unreadable_image_names_the_file(tmp_path):
    from detval.data import DataError

    f = tmp_path / "x.jpg"
    f.write_text("not an image")
    with pytest.raises(DataError, match="x.jpg"):
        load_image(f, 640)
