import os

import pytest

from detval.data import DataError, label_path_for, list_images, load_data_config


def _tree(tmp_path):
    for sub in ("a", "b"):
        d = tmp_path / "ds" / "images" / sub
        d.mkdir(parents=True)
        (d / "1.jpg").write_bytes(b"x")
        (d / "2.PNG").write_bytes(b"x")
        (d / "notes.txt").write_text("x")
    return tmp_path / "ds"


def test_relative_path_folder_list_file_and_names_forms(tmp_path):
    root = _tree(tmp_path)
    (root / "val.txt").write_text("./images/a/1.jpg\n./images/b/2.PNG\n")
    y = tmp_path / "d.yaml"
    y.write_text("path: ds\ntrain: [images/a, images/b]\nval: val.txt\nnames: {0: cat, 1: dog}\n")
    cfg = load_data_config(y)
    assert cfg.root == root.resolve() and cfg.names == ["cat", "dog"] and cfg.nc == 2 and cfg.test is None
    assert [p.name for p in list_images(cfg.train)] == ["1.jpg", "2.PNG", "1.jpg", "2.PNG"]
    assert [str(p) for p in list_images(cfg.val)] == [str(root / "images/a/1.jpg"), str(root / "images/b/2.PNG")]


def test_no_path_means_the_yaml_folder_and_absolute_path_is_kept(tmp_path):
    root = _tree(tmp_path)
    y = root / "d.yaml"
    y.write_text("val: images\nnames: [cat]\nnc: 1\n")
    cfg = load_data_config(y)
    assert cfg.root == root.resolve() and cfg.val == [root.resolve() / "images"] and cfg.names == ["cat"]
    y2 = tmp_path / "elsewhere.yaml"
    y2.write_text(f"path: {root.resolve()}\nval: [images/a]\ntest: images/b\nnames: [cat]\n")
    cfg = load_data_config(y2)
    assert cfg.val == [root.resolve() / "images" / "a"] and cfg.test == [root.resolve() / "images" / "b"]
    assert cfg.train is None


def test_folder_is_globbed_recursively_and_sorted_as_strings(tmp_path):
    root = _tree(tmp_path)
    (root / "images" / "a" / "deep").mkdir()
    (root / "images" / "a" / "deep" / "0.webp").write_bytes(b"x")
    (root / "images" / "Z.Jpeg").write_bytes(b"x")
    (root / "images" / "video.mp4").write_bytes(b"x")
    got = [str(p.relative_to(root / "images")) for p in list_images([root / "images"])]
    # '/' (0x2F) sorts before letters and 'Z' (0x5A) before 'a' (0x61): plain string order, as v7.0 sorted()
    assert got == ["Z.Jpeg", "a/1.jpg", "a/2.PNG", "a/deep/0.webp", "b/1.jpg", "b/2.PNG"]


def test_list_file_lines_dot_slash_absolute_duplicates_and_non_images(tmp_path):
    root = _tree(tmp_path)
    lst = root / "lists" / "val.txt"
    lst.parent.mkdir()
    absolute = root / "images" / "b" / "1.jpg"
    lst.write_text(f"\n./../images/a/1.jpg\n{absolute}\n./../images/a/notes.txt\n{absolute}\n\n")
    got = list_images([lst])
    # './' is replaced by the list file's folder (not resolved: '..' stays in the string, as in v7.0)
    assert [str(p) for p in got] == sorted([str(absolute), f"{lst.parent}{os.sep}../images/a/1.jpg"])


@pytest.mark.parametrize("text, message", [
    ("val: images\nnames: [a, b]\nnc: 3\n", "d.yaml: nc 3 but 2 names"),
    ("val: images\n", "d.yaml: 'names' missing"),
    ("val: images\nnames: {0: a, 2: b}\n", "d.yaml: names keys must be the integers 0..1"),
    ("val: images\nnames: {'0': a}\n", "d.yaml: names keys"),
    ("- just\n- a list\n", "d.yaml: expected a mapping"),
    ("val: [unclosed\n", "d.yaml: not valid YAML"),
])
def test_bad_yaml_errors_name_the_file(tmp_path, text, message):
    y = tmp_path / "d.yaml"
    y.write_text(text)
    with pytest.raises(DataError, match=message):
        load_data_config(y)


def test_missing_file_source_or_images_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="missing.yaml: data yaml not found"):
        load_data_config(tmp_path / "missing.yaml")
    y = tmp_path / "d.yaml"
    y.write_text("val: nowhere\nnames: [a]\n")
    with pytest.raises(DataError, match="nowhere: does not exist"):
        list_images(load_data_config(y).val)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found in .*empty"):
        list_images([tmp_path / "empty"])


def test_label_path_replaces_last_images_folder(tmp_path):
    p = tmp_path / "images" / "x" / "images" / "a.b.jpg"
    assert label_path_for(p) == tmp_path / "images" / "x" / "labels" / "a.b.txt"
    assert label_path_for("/data/imgs/a.png") == label_path_for("/data/imgs/a.png")  # no /images/: beside it
    assert str(label_path_for("/data/imgs/a.png")) == "/data/imgs/a.txt"


def test_coco128_val_images_in_v7_order(data_dir):
    cfg = load_data_config(data_dir / "coco128" / "coco128.yaml")
    assert cfg.nc == 80 and cfg.names[0] == "person" and cfg.names[79] == "toothbrush"
    images = list_images(cfg.val)
    folder = data_dir / "coco128" / "images" / "train2017"
    expected = sorted(str(p.resolve()) for p in folder.iterdir() if p.suffix == ".jpg")
    assert [str(p) for p in images] == expected and len(images) == 128
    # the two label files without an image are not images of the split
    stems = {p.stem for p in images}
    assert "000000000656" not in stems and "000000000659" not in stems
    assert (data_dir / "coco128" / "labels" / "train2017" / "000000000656.txt").is_file()
