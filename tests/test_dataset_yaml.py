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


def test_errors_name_the_file(tmp_path):
    y = tmp_path / "d.yaml"
    y.write_text("val: images\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DataError, match="d.yaml: nc 3 but 2 names"):
        load_data_config(y)
    y.write_text("val: images\n")
    with pytest.raises(DataError, match="names"):
        load_data_config(y)
    with pytest.raises(DataError, match="not found"):
        load_data_config(tmp_path / "missing.yaml")
    y.write_text("val: nowhere\nnames: [a]\n")
    with pytest.raises(DataError, match="nowhere"):
        list_images(load_data_config(y).val)


def test_label_path_replaces_last_images_folder(tmp_path):
    p = tmp_path / "images" / "x" / "images" / "a.b.jpg"
    assert label_path_for(p) == tmp_path / "images" / "x" / "labels" / "a.b.txt"
