"""detval bench: per-stage timing over a real run, its loading equal to the dataset's, its metrics equal to val's."""
import numpy as np
import torch

from detval.api import validate
from detval.cli import main
from detval.commands.bench import STAGES, run_stage_bench
from detval.config import ValConfig
from detval.data import ValDataset, list_images, load_data_config, rect_batch_plan, scan_images
from detval.inference import StageTimes


def cfg_for(data_dir, tmp_path, **kw) -> ValConfig:
    return ValConfig(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                     plots=False, quiet=True, project=str(tmp_path / "runs"), **kw)


def test_timed_dataset_gives_the_same_items(data_dir):
    data = load_data_config(data_dir / "coco128" / "coco128.yaml")
    records = scan_images(list_images(data.val)[:6], data.nc).records
    plan = rect_batch_plan(np.array([r.shape_hw for r in records]), 4, 256, 32)
    records = [records[i] for i in plan.order]
    times = StageTimes({})
    timed, plain = ValDataset(records, plan, 256, times=times), ValDataset(records, plan, 256)
    for i in range(len(plain)):
        mine, theirs = timed[i], plain[i]
        assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1]) and mine[2:] == theirs[2:]
        assert [type(v) for v in mine[3][1][1]] == [type(v) for v in theirs[3][1][1]]
    assert set(times.seconds) == {"decode", "letterbox", "preprocess"} and all(v > 0 for v in times.seconds.values())


def test_stages_cover_the_run_and_metrics_equal_val(data_dir, tmp_path):
    cfg = cfg_for(data_dir, tmp_path, imgsz=160, workers=0)
    report = run_stage_bench(cfg)
    assert report.images == 128
    assert list(report.seconds) == [s for s in STAGES if s != "load (cache)"]
    assert all(s > 0 for s in report.seconds.values())
    assert abs(report.total - sum(report.seconds.values())) < 1e-12
    r = validate(cfg)
    assert (report.result.p, report.result.r, report.result.map50, report.result.map) == (r.p, r.r, r.map50, r.map)
    text = "\n".join(report.lines())
    for s in report.seconds:
        assert s in text
    assert f"mAP50-95 {r.map:.3f}" in text


def test_cache_stage_and_max_batches(data_dir, tmp_path):
    report = run_stage_bench(cfg_for(data_dir, tmp_path, imgsz=128, batch_size=8, cache="ram"), max_batches=2)
    assert report.images == 16
    assert "load (cache)" in report.seconds and "decode" not in report.seconds


def test_cli(data_dir, tmp_path, capsys):
    args = ["bench", "--weights", str(data_dir / "weights" / "yolov5n.pt"),
            "--data", str(data_dir / "coco128" / "coco128.yaml"), "--imgsz", "128", "--batch-size", "4",
            "--max-batches", "1", "--whole-batches"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 images" in out and "inference in whole batches" in out and "images/s" in out
    assert main(["bench", "--weights", str(tmp_path / "missing.pt"), "--data", args[4]]) == 2
    assert "no such weights file" in capsys.readouterr().err
