"""Fault cases end to end on tiny copies of coco128 (tests/tiny_data.py) at --imgsz 320: a bad image, bad labels, a
read-only or full output, a broken cache. Each says what went wrong in one line naming the file, finds what it can
before inference, and keeps what was computed. (A failing or interrupted rank: tests/test_cli_distributed.py.)"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tiny_data import first_image, label_of, tiny_coco128
from detval.api import validate
from detval.config import ValConfig

IMGSZ = 320


def _cfg(data_dir, yaml, tmp_path, **kw) -> ValConfig:
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(yaml), imgsz=IMGSZ, batch_size=2,
                device="cpu", workers=0, plots=False, project=str(tmp_path / "runs"), name="exp", exist_ok=True)
    base.update(kw)
    return ValConfig(**base)


# --- images and labels -------------------------------------------------------------------------------------------

def test_a_wide_thin_image_is_excluded_by_name_and_the_run_goes_on(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=3)
    wide = yaml.parent / "images" / "train2017" / "wide.jpg"
    cv2.imwrite(str(wide), np.full((10, 4000, 3), 127, np.uint8))  # 4000 x 10: 320 x 0 after load_image
    r = validate(_cfg(data_dir, yaml, tmp_path, workers=1))
    err = capsys.readouterr().err
    assert r.images == 3
    assert [e.file for e in r.excluded] == [str(wide)]
    assert f"WARNING: excluded {wide}: {wide}: image 4000x10 would be resized to 320x0 at --imgsz 320" in err


def test_duplicate_rows_and_no_labels_at_all_are_warned_as_val_py_warns(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    image = first_image(yaml)
    label = label_of(image)
    label.write_text(label.read_text() + label.read_text().splitlines()[0] + "\n")
    validate(_cfg(data_dir, yaml, tmp_path))
    assert f"val: WARNING ⚠️ {image}: 1 duplicate labels removed" in capsys.readouterr().err

    bare = tiny_coco128(data_dir, tmp_path / "bare", n=2, labels=False)
    r = validate(_cfg(data_dir, bare, tmp_path))
    err = capsys.readouterr().err
    assert r.instances == 0
    assert f"val: WARNING ⚠️ No labels found in {bare.parent / 'labels' / 'train2017'}. See https://" in err
    assert "WARNING ⚠️ no labels found in val set, can not compute metrics without labels" in err


# --- settings val.py adjusts -------------------------------------------------------------------------------------

def test_imgsz_off_the_stride_and_half_on_cpu_are_warned_and_recorded_as_run(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    r = validate(_cfg(data_dir, yaml, tmp_path, imgsz=321, half=True))
    err = capsys.readouterr().err
    assert "WARNING ⚠️ --img-size 321 must be multiple of max stride 32, updating to 352" in err
    assert "--half: half precision is only supported on CUDA, running FP32 on cpu" in err
    settings = json.loads((r.run_dir / "results.json").read_text())["settings"]
    assert (settings["imgsz"], settings["half"]) == (352, False)
    same = validate(_cfg(data_dir, yaml, tmp_path, imgsz=352, name="fp32"))
    assert (r.p, r.r, r.map50, r.map) == (same.p, same.r, same.map50, same.map)  # FP32: the same floats
