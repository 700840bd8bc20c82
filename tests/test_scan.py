import numpy as np
import pytest

from detval.data import DataError, scan_images


def _image(path, w=64, h=48):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return path


def _labels(tmp_path, name, text):
    f = tmp_path / "labels" / f"{name}.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)


def test_coco128_counts(data_dir):
    from detval.data import list_images, load_data_config

    cfg = load_data_config(data_dir / "coco128" / "coco128.yaml")
    images = list_images(cfg.val)
    assert len(images) == 128 and images == sorted(images)
    res = scan_images(images, cfg.nc)
    assert (res.n_found_labels, res.n_missing, res.n_corrupt) == (126, 2, 0)
    assert sum(len(r.labels) for r in res.records) == 929


@pytest.mark.parametrize("text, reason", [
    ("0 0.5 0.5 0.2\n", "labels/bad.txt:1: 4 columns"),
    ("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", "labels/bad.txt:2: class 7 outside"),
    ("0 0.5 1.5 0.2 0.2\n", "labels/bad.txt:1: coordinates outside"),
    ("0 -0.5 0.5 0.2 0.2\n", "labels/bad.txt:1: negative"),
    ("0 0.5 0.5 0.2 zz\n", "labels/bad.txt:1: not a number"),
    ("1.5 0.5 0.5 0.2 0.2\n", "labels/bad.txt:1: class 1.5 outside"),
])
def test_bad_label_excludes_the_image_naming_file_and_line(tmp_path, text, reason):
    good = _image(tmp_path / "images" / "good.jpg")
    bad = _image(tmp_path / "images" / "bad.jpg")
    _labels(tmp_path, "good", "0 0.5 0.5 0.2 0.2\n")
    _labels(tmp_path, "bad", text)
    res = scan_images([bad, good], nc=3)
    assert [r.path for r in res.records] == [good]
    assert len(res.excluded) == 1 and res.excluded[0].file == str(bad)
    assert reason in res.excluded[0].reason
    assert res.n_corrupt == 1


def test_corrupt_truncated_and_non_images_are_excluded(tmp_path):
    good = _image(tmp_path / "images" / "good.jpg")
    notimg = tmp_path / "images" / "text.jpg"
    notimg.write_text("hello")
    trunc = tmp_path / "images" / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:200])
    res = scan_images([good, notimg, trunc], nc=3)
    assert [r.path for r in res.records] == [good]
    assert {e.file for e in res.excluded} == {str(notimg), str(trunc)}
    assert all("not a readable image" in e.reason or "corrupt" in e.reason for e in res.excluded)


def test_duplicates_removed_and_sorted_like_yolov5(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    _labels(tmp_path, "a", "2 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n2 0.5 0.5 0.2 0.2\n")
    res = scan_images([img], nc=3)
    assert res.records[0].labels[:, 0].tolist() == [1, 2]
    assert any("1 duplicate labels removed" in w for w in res.warnings)


def test_missing_labels_folder_warns_and_nothing_left_raises(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    res = scan_images([img], nc=3)
    assert res.n_missing == 1 and len(res.records[0].labels) == 0
    assert any("no labels found" in w for w in res.warnings)
    bad = tmp_path / "images" / "b.jpg"
    bad.write_text("x")
    with pytest.raises(DataError, match="b.jpg"):
        scan_images([bad], nc=3)


def test_segments_become_boxes(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    _labels(tmp_path, "a", "0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    lb = scan_images([img], nc=1).records[0].labels
    np.testing.assert_allclose(lb, [[0, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
