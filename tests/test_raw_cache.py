"""Raw-output cache: re-evaluation without the model equals a fresh full run; resume; stale caches refused."""
import json
import signal
import subprocess
import sys
import time

import pytest

from detval.api import evaluate_raw, validate
from detval.config import ValConfig
from detval.errors import DetvalError

IMGSZ = 192


def _cfg(data_dir, tmp_path, name, **kw):
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                imgsz=IMGSZ, batch_size=16, project=str(tmp_path), name=name, exist_ok=True, quiet=True,
                plots=False)
    base.update(kw)
    return ValConfig(**base)


def _saved(result) -> dict:
    d = json.loads((result.run_dir / "results.json").read_text())
    return {k: d[k] for k in ("images", "instances", "metrics", "maps", "per_class")}


@pytest.fixture(scope="module")
def cached(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raw")
    raw = tmp / "raw"
    result = validate(_cfg(data_dir, tmp, "first", save_raw=str(raw)))
    return tmp, raw, result


@pytest.mark.parametrize("settings", [
    dict(conf_thres=0.25, iou_thres=0.45),
    dict(max_det=100, iou_thres=0.7),
    dict(single_cls=True),
    dict(),
])
def test_reevaluation_equals_a_fresh_full_run(data_dir, cached, settings):
    tmp, raw, _ = cached
    fresh = validate(_cfg(data_dir, tmp, "fresh", **settings))
    again = evaluate_raw(_cfg(data_dir, tmp, "reeval", weights="", data="", save_raw=str(raw), **settings))
    assert _saved(again) == _saved(fresh)


def test_reevaluation_records_the_cached_runs_settings(data_dir, cached):
    """results.json says what the numbers come from: the cache's data, imgsz and batch size, the new thresholds."""
    tmp, raw, first = cached
    again = evaluate_raw(ValConfig(weights="", data="", save_raw=str(raw), conf_thres=0.25, project=str(tmp),
                                   name="settings", quiet=True, plots=False))
    settings = json.loads((again.run_dir / "results.json").read_text())["settings"]
    original = json.loads((first.run_dir / "results.json").read_text())["settings"]
    assert (settings["imgsz"], settings["batch_size"], settings["conf_thres"]) == (IMGSZ, 16, 0.25)
    assert settings["data"] == original["data"] == str(data_dir / "coco128" / "coco128.yaml")


def test_reevaluation_save_txt_equals_full_run(data_dir, cached):
    tmp, raw, _ = cached
    fresh = validate(_cfg(data_dir, tmp, "fresh_txt", save_txt=True, max_det=100))
    again = evaluate_raw(_cfg(data_dir, tmp, "reeval_txt", weights="", data="", save_raw=str(raw), save_txt=True,
                              max_det=100))
    files = sorted(p.name for p in (fresh.run_dir / "labels").glob("*.txt"))
    assert files and files == sorted(p.name for p in (again.run_dir / "labels").glob("*.txt"))
    for f in files:
        assert (fresh.run_dir / "labels" / f).read_text() == (again.run_dir / "labels" / f).read_text()


def test_threshold_below_stored_candidates_is_refused(data_dir, cached):
    tmp, raw, _ = cached
    with pytest.raises(DetvalError, match="conf 0.001"):
        evaluate_raw(_cfg(data_dir, tmp, "low", weights="", data="", save_raw=str(raw), conf_thres=0.0001))


def test_stale_cache_is_refused(data_dir, cached, tmp_path):
    tmp, raw, _ = cached
    with pytest.raises(DetvalError, match="imgsz"):
        validate(_cfg(data_dir, tmp, "other", save_raw=str(raw), imgsz=224))
    sub = tmp_path / "sub.txt"
    sub.write_text("\n".join(str(p) for p in sorted((data_dir / "coco128/images/train2017").glob("*.jpg"))[:40]))
    y = tmp_path / "sub.yaml"
    y.write_text(f"path: {tmp_path}\nval: sub.txt\nnames: {json.dumps(_names(data_dir))}\n")
    with pytest.raises(DetvalError, match="images_sha256"):
        validate(_cfg(data_dir, tmp, "other", data=str(y), save_raw=str(raw)))
    import torch

    from detval.model import load_model

    sd = load_model(data_dir / "weights" / "yolov5n.pt", fuse=False).model.state_dict()
    sd["model.0.conv.weight"] = sd["model.0.conv.weight"] * 1.01
    w = tmp_path / "other.pt"
    torch.save(sd, w)
    with pytest.raises(DetvalError, match="weights_sha256"):
        validate(_cfg(data_dir, tmp, "other", weights=str(w), cfg="yolov5n", save_raw=str(raw)))


def _names(data_dir):
    from detval.data import load_data_config

    return load_data_config(data_dir / "coco128" / "coco128.yaml").names


def test_incomplete_cache_cannot_be_reevaluated(data_dir, cached, tmp_path):
    import shutil

    tmp, raw, _ = cached
    part = tmp_path / "part"
    shutil.copytree(raw, part)
    (part / "batch_000003.pt").unlink()
    with pytest.raises(DetvalError, match="incomplete cache"):
        evaluate_raw(_cfg(data_dir, tmp, "x", weights="", data="", save_raw=str(part)))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(data_dir, cached, tmp_path):
    tmp, _, first = cached
    raw = tmp_path / "raw"
    cmd = [sys.executable, "-m", "detval", "val", "--weights", str(data_dir / "weights" / "yolov5n.pt"),
           "--data", str(data_dir / "coco128" / "coco128.yaml"), "--imgsz", str(IMGSZ), "--batch-size", "16",
           "--project", str(tmp_path), "--name", "killed", "--exist-ok", "--no-plots", "--save-raw", str(raw),
           "--workers", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(raw.glob("batch_*.pt"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(raw.glob("batch_*.pt")))
    assert 2 <= done < 8, f"the run should have been killed midway, {done} of 8 batches were cached"
    resumed = validate(_cfg(data_dir, tmp_path, "resumed", save_raw=str(raw)))
    assert _saved(resumed) == _saved(first)
    assert len(list(raw.glob("batch_*.pt"))) == 8
    assert not list(raw.glob("*.tmp*"))
