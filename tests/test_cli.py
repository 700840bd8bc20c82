import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "detval", *args], capture_output=True, text=True, timeout=300)


def test_val_and_eval_from_the_command_line(data_dir, tmp_path):
    w, d = data_dir / "weights" / "yolov5n.pt", data_dir / "coco128" / "coco128.yaml"
    p = _run("val", "--weights", str(w), "--data", str(d), "--imgsz", "96", "--batch-size", "64",
             "--project", str(tmp_path), "--name", "a", "--save-raw", str(tmp_path / "raw"), "--no-plots")
    assert p.returncode == 0, p.stderr
    assert "Class     Images  Instances          P          R      mAP50   mAP50-95" in p.stderr + p.stdout
    assert "                   all        128        929" in p.stdout
    assert "Speed:" in p.stdout and "shape (64, 3, 96, 96)" in p.stdout
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["settings"]["imgsz"] == 96 and res["weights"]["sha256"].startswith("4f180cf2")
    q = _run("eval", "--raw", str(tmp_path / "raw"), "--conf-thres", "0.25", "--project", str(tmp_path), "--name", "b")
    assert q.returncode == 0, q.stderr
    assert "                   all        128        929" in q.stdout
    assert json.loads((tmp_path / "b" / "results.json").read_text())["settings"]["conf_thres"] == 0.25


def test_failures_exit_non_zero_with_the_file_named(data_dir, tmp_path):
    p = _run("val", "--weights", str(data_dir / "weights" / "yolov5n.pt"), "--data", str(tmp_path / "none.yaml"))
    assert p.returncode == 2 and "none.yaml" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    p = _run("val", "--weights", str(bad), "--data", str(data_dir / "coco128" / "coco128.yaml"))
    assert p.returncode == 2 and "bad.pt" in p.stderr and "Traceback" not in p.stderr
    p = _run("val", "--weights", "w.pt", "--data", "d.yaml", "--conf-thres", "2")
    assert p.returncode == 2 and "--conf-thres" in p.stderr


def test_task_speed_gives_the_api_and_the_cli_the_same_numbers(data_dir, tmp_path):
    """val.py --task speed runs at conf 0.25 / iou 0.45 without plots; the API once ran it at the defaults."""
    from detval.api import validate
    from detval.cli import main
    from detval.config import ValConfig

    w, d = str(data_dir / "weights" / "yolov5n.pt"), str(data_dir / "coco128" / "coco128.yaml")
    assert main(["val", "--weights", w, "--data", d, "--imgsz", "96", "--batch-size", "64", "--task", "speed",
                 "--project", str(tmp_path), "--name", "cli", "--quiet"]) == 0
    validate(ValConfig(weights=w, data=d, imgsz=96, batch_size=64, task="speed", project=str(tmp_path),
                       name="api", quiet=True))
    cli, api = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("cli", "api"))
    assert cli["settings"] == api["settings"] | {"name": "cli"}
    assert (api["settings"]["conf_thres"], api["settings"]["iou_thres"], api["settings"]["plots"]) == (0.25, 0.45, False)
    assert cli["metrics"] == api["metrics"] and cli["per_class"] == api["per_class"]
    assert not list(tmp_path.glob("*/*.png"))


def test_a_bug_prints_its_traceback_and_the_settings(tmp_path, capsys):
    """An error that is no user's mistake (here a TypeError deep in compare) exits 1 with what to report."""
    from detval.cli import main

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"metrics": 5, "per_class": []}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("detval: internal error in `detval compare` (") and f"run_a='{tmp_path / 'a'}'" in last
