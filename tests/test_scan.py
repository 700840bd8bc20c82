import numpy as np
import pytest

from detval.data import DataError, scan_images
from detval.data.scan import read_labels


def _image(path, w=64, h=48):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return path


def _labels(tmp_path, name, text):
    f = tmp_path / "labels" / f"{name}.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def test_coco128_counts(data_dir):
    from detval.data import list_images, load_data_config

    cfg = load_data_config(data_dir / "coco128" / "coco128.yaml")
    images = list_images(cfg.val)
    res = scan_images(images, cfg.nc)
    # v7.0 printed "126 images, 2 backgrounds, 0 corrupt" and 929 instances for these files
    assert (res.n_found_labels, res.n_missing + res.n_empty, res.n_corrupt) == (126, 2, 0)
    assert res.n_instances == 929 and res.excluded == []
    assert [r.path for r in res.records] == images
    empty = sorted(r.path.stem for r in res.records if len(r.labels) == 0)
    assert empty == ["000000000250", "000000000508"]
    # labels are the label files' numbers as float32, rows in file order (no duplicates in coco128)
    rec = next(r for r in res.records if r.path.stem == "000000000009")
    text = (data_dir / "coco128" / "labels" / "train2017" / "000000000009.txt").read_text().split()
    np.testing.assert_array_equal(rec.labels, np.array(text, dtype=np.float32).reshape(-1, 5))
    assert rec.labels.dtype == np.float32 and rec.shape_hw == (480, 640)
    assert len({r.labels[:, 0].astype(int).tobytes() for r in res.records}) > 1
    assert len(np.unique(np.concatenate([r.labels[:, 0] for r in res.records]))) == 71


@pytest.mark.parametrize("text, reason", [
    ("0 0.5 0.5 0.2\n", "labels/bad.txt:1: 4 columns, expected 5"),
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 0.9\n", "labels/bad.txt:2: 6 columns, expected 5"),
    ("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", "labels/bad.txt:2: class 7 outside the integers 0..2"),
    ("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n", "labels/bad.txt:2: class 3 outside"),
    ("1.5 0.5 0.5 0.2 0.2\n", "labels/bad.txt:1: class 1.5 outside"),
    ("0 0.5 1.5 0.2 0.2\n", "labels/bad.txt:1: coordinate 1.5 > 1"),
    ("0 -0.5 0.5 0.2 0.2\n", "labels/bad.txt:1: negative or invalid value -0.5"),
    ("-1 0.5 0.5 0.2 0.2\n", "labels/bad.txt:1: negative or invalid value -1"),
    ("0 nan 0.5 0.2 0.2\n", "labels/bad.txt:1: negative or invalid value nan"),
    ("0 0.5 0.5 0.2 zz\n", "labels/bad.txt:1: not a number: 'zz'"),
    # blank lines: skipped, but the line numbers are the file's
    ("\n\n0 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 0.2\n", "labels/bad.txt:5: 4 columns"),
    ("0 0.5 0.5 0.2 0.2\n   \n0 0.5 0.5 0.2 0.2\n", "labels/bad.txt:2: 0 columns"),  # v7.0 fails here too
    # polygon files (a row of more than 6 fields): odd coordinate counts cannot be points
    ("0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n1 0.1 0.2 0.3\n", "labels/bad.txt:2: polygon row with 3 coordinates"),
])
def test_bad_label_excludes_the_image_naming_file_and_line(tmp_path, text, reason):
    good = _image(tmp_path / "images" / "good.jpg")
    bad = _image(tmp_path / "images" / "bad.jpg")
    _labels(tmp_path, "good", "0 0.5 0.5 0.2 0.2\n")
    _labels(tmp_path, "bad", text)
    res = scan_images([bad, good], nc=3)
    assert [r.path for r in res.records] == [good]
    assert len(res.excluded) == 1 and res.excluded[0].file == str(bad)
    assert reason in res.excluded[0].reason and str(tmp_path) in res.excluded[0].reason
    # as v7.0 counts: both label files were found, the bad one's image is corrupt
    assert (res.n_found_labels, res.n_corrupt, res.n_missing, res.n_empty) == (2, 1, 0, 0)


def test_corrupt_truncated_and_non_images_are_excluded(tmp_path):
    good = _image(tmp_path / "images" / "good.jpg")
    notimg = tmp_path / "images" / "text.jpg"  # a .txt renamed .jpg
    notimg.write_text("hello")
    header_cut = tmp_path / "images" / "header_cut.jpg"
    header_cut.write_bytes(good.read_bytes()[:200])
    import cv2

    noisy = tmp_path / "noisy.jpg"
    cv2.imwrite(str(noisy), np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    data_cut = tmp_path / "images" / "data_cut.jpg"  # headers intact, scan data cut: PIL verify passes
    data_cut.write_bytes(noisy.read_bytes()[: noisy.stat().st_size * 6 // 10])
    tiny = _image(tmp_path / "images" / "tiny.png", w=9, h=40)
    res = scan_images([good, notimg, header_cut, data_cut, tiny], nc=3)
    assert [r.path for r in res.records] == [good]
    reasons = {e.file: e.reason for e in res.excluded}
    assert set(reasons) == {str(notimg), str(header_cut), str(data_cut), str(tiny)}
    assert reasons[str(notimg)].startswith(f"{notimg}: not a readable image")
    assert reasons[str(header_cut)].startswith(f"{header_cut}: not a readable image")
    # v7.0 excludes it too: its restore step cannot load the file
    assert reasons[str(data_cut)].startswith(f"{data_cut}: corrupt JPEG")
    assert reasons[str(tiny)] == f"{tiny}: image size 9x40 < 10 pixels"
    assert res.n_corrupt == 4 and res.n_missing == 1  # only the good image got as far as its labels


def test_jpeg_without_end_marker_is_kept_with_a_warning_and_not_rewritten(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    data = img.read_bytes() + b"\x00\x00trailing"
    img.write_bytes(data)
    res = scan_images([img], nc=3)
    assert [r.path for r in res.records] == [img]
    assert any(w.startswith(f"{img}: JPEG without end marker") for w in res.warnings)
    assert img.read_bytes() == data  # v7.0 would have re-saved it


def test_duplicates_removed_in_np_unique_order(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    rows = ["2 0.5 0.5 0.2 0.2", "1 0.1 0.1 0.1 0.1", "2 0.5 0.5 0.2 0.2", "1 0.05 0.9 0.1 0.1", "0 0.7 0.1 0.1 0.1"]
    _labels(tmp_path, "a", "\n".join(rows) + "\n")
    res = scan_images([img], nc=3)
    # v7.0 keeps np.unique's lexicographically sorted rows: computed here with Python tuples instead
    expected = sorted({tuple(float(np.float32(v)) for v in r.split()) for r in rows})
    assert res.records[0].labels.tolist() == [list(r) for r in expected]
    assert res.warnings == [f"{img}: 1 duplicate labels removed"]  # v7.0 names the image


def test_without_duplicates_the_file_order_is_kept(tmp_path):
    f = _labels(tmp_path, "a", "2 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n")
    lb, duplicates = read_labels(f, nc=3)
    assert lb[:, 0].tolist() == [2, 1] and duplicates == 0


def test_empty_and_missing_label_files_are_backgrounds(tmp_path):
    a = _image(tmp_path / "images" / "a.jpg")
    b = _image(tmp_path / "images" / "b.jpg")
    _labels(tmp_path, "a", "\n  \n")
    res = scan_images([a, b], nc=3)
    assert [len(r.labels) for r in res.records] == [0, 0]
    assert all(r.labels.shape == (0, 5) and r.labels.dtype == np.float32 for r in res.records)
    # v7.0: an empty file is 'found' and 'empty'; the scan line says 1 images, 2 backgrounds
    assert (res.n_found_labels, res.n_empty, res.n_missing) == (1, 1, 1)


def test_missing_labels_folder_warns_and_nothing_left_raises(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    res = scan_images([img], nc=3)
    assert res.n_missing == 1 and len(res.records[0].labels) == 0
    assert f"No labels found in {tmp_path / 'labels'}. See https://github.com" in res.warnings[-1]
    bad = tmp_path / "images" / "b.jpg"
    bad.write_text("x")
    with pytest.raises(DataError, match="b.jpg"):
        scan_images([bad], nc=3)


def test_segments_become_boxes(tmp_path):
    img = _image(tmp_path / "images" / "a.jpg")
    # a 4-point polygon and, in the same file, a 5-field row read as a 2-point polygon (as v7.0 does)
    _labels(tmp_path, "a", "0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n1 0.2 0.2 0.4 0.8\n")
    lb = scan_images([img], nc=2).records[0].labels
    assert lb.dtype == np.float32
    np.testing.assert_allclose(lb, [[0, 0.3, 0.4, 0.4, 0.4], [1, 0.3, 0.5, 0.2, 0.6]], atol=1e-6)


def test_results_keep_input_order_with_many_threads(tmp_path):
    paths = [_image(tmp_path / "images" / f"{k:02d}.jpg", w=20 + k, h=30) for k in range(12)]
    for k in range(0, 12, 3):
        _labels(tmp_path, f"{k:02d}", f"{k % 3} 0.5 0.5 0.2 0.2\n")
    res = scan_images(paths[::-1], nc=3, threads=4)
    assert [r.path for r in res.records] == paths[::-1]
    assert [r.shape_hw for r in res.records] == [(30, 20 + k) for k in range(12)][::-1]


def test_exif_rotation_swaps_the_size(tmp_path):
    from PIL import Image

    img = tmp_path / "images" / "rot.jpg"
    img.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[274] = 6  # rotated 90 degrees: displayed portrait
    Image.new("RGB", (64, 48), (90, 90, 90)).save(img, exif=exif.tobytes())
    assert scan_images([img], nc=1).records[0].shape_hw == (64, 48)
