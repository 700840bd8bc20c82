"""The same digits on any ranks x threads, at every batch size: results.json floats, per_class.csv, --save-txt and
--save-json files are byte for byte those of the plain default single-process run (no --threads), as a user runs it.

coco128 has 128 images, so batch sizes 7 and 64 leave a last partial batch (2 images) and batch size 1 runs every
image alone. Each variant runs every batch size in one process (one command-line process, or one process group), so
that the start-up is paid once.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import val_workers
from val_workers import assert_same_outcome, run_outcome
from detval.config import ValConfig
from detval.distributed import launch

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 7, 16, 32, 64)
ENV = dict(os.environ, PYTHONPATH=str(REPO))
JSON_BATCH = 7  # --save-json (its COCO evaluation) at one batch size only: it is the slow part of a small run


def _args(data_dir: Path, imgsz: int, batch: int, run_dir: Path) -> list[str]:
    return ["val", "--weights", str(data_dir / "weights" / "yolov5n.pt"),
            "--data", str(data_dir / "coco128" / "coco128.yaml"), "--imgsz", str(imgsz), "--batch-size", str(batch),
            "--device", "cpu", "--save-txt", "--save-conf", "--no-plots", "--quiet", "--exist-ok",
            *(["--save-json"] if batch == JSON_BATCH else []), "--project", str(run_dir.parent), "--name", run_dir.name]


def command_line_runs(runs: list[list[str]]) -> None:
    """`detval val` once per argument list, in order, in one fresh process (torch's default threads until a run
    sets --threads), as the command line runs it."""
    script = "import sys\nfrom detval.cli import main\nfor argv in eval(sys.argv[1]):\n    assert main(argv) == 0\n"
    p = subprocess.run([sys.executable, "-c", script, repr(runs)], capture_output=True, text=True, timeout=900,
                       cwd=REPO, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]


def process_group_runs(data_dir: Path, root: Path, imgsz: int, world_size: int, schedule: str) -> dict[int, dict]:
    """Every batch size in one process group of world_size CPU ranks: outcome by batch size."""
    cfgs = [ValConfig(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                      imgsz=imgsz, batch_size=b, device="cpu", save_txt=True, save_conf=True, save_json=b == JSON_BATCH,
                      plots=False, quiet=True, project=str(root), name=f"b{b}", schedule=schedule, exist_ok=True)
            for b in BATCH_SIZES]
    passes = launch(val_workers.validate_passes, (cfgs,), world_size=world_size, timeout_s=300, run_timeout_s=900)
    return {b: run_outcome(result.run_dir) for b, (result, _) in zip(BATCH_SIZES, passes)}


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory) -> dict[str, dict[int, dict]]:
    """The default run (the baseline), then --threads 1 and --threads 4, at every batch size: outcomes by name."""
    root = tmp_path_factory.mktemp("one")
    names = {"default": [], "threads 1": ["--threads", "1"], "threads 4": ["--threads", "4"]}
    command_line_runs([_args(data_dir, 96, b, root / f"{name.replace(' ', '')}-b{b}") + extra
                       for name, extra in names.items() for b in BATCH_SIZES])
    out = {name: {b: run_outcome(root / f"{name.replace(' ', '')}-b{b}") for b in BATCH_SIZES} for name in names}
    for b, outcome in out["default"].items():  # real, non-trivial runs, so that agreeing with them means something
        assert outcome["results"]["images"] == 128 and len(outcome["labels"]) > 90, b
        assert 0 < outcome["results"]["metrics"]["mAP50"] < 1
    assert len(out["default"][JSON_BATCH]["json"]) == 1
    return out


@pytest.mark.parametrize("variant", ["threads 1", "threads 4"])
def test_one_process_at_any_thread_count_matches_the_default_run(one_process, variant):
    for b in BATCH_SIZES:
        assert_same_outcome(one_process[variant][b], one_process["default"][b])


@pytest.mark.parametrize("world_size, schedule", [(2, "dynamic"), pytest.param(3, "static", marks=pytest.mark.slow),
                                                  pytest.param(4, "dynamic", marks=pytest.mark.slow)])
def test_process_groups_match_the_default_run(data_dir, tmp_path, one_process, world_size, schedule):
    got = process_group_runs(data_dir, tmp_path, 96, world_size, schedule)
    for b in BATCH_SIZES:
        assert_same_outcome(got[b], one_process["default"][b])


def test_torchrun_matches_the_default_run(data_dir, tmp_path, one_process):
    script = Path(sys.executable).with_name("torchrun")
    launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "detval",
           *_args(data_dir, 96, JSON_BATCH, tmp_path / "run")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                       env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_outcome(run_outcome(tmp_path / "run"), one_process["default"][JSON_BATCH])


@pytest.mark.slow
@pytest.mark.parametrize("imgsz", [320, 640])
def test_larger_images_on_one_thread_and_two_ranks_match_the_default_run(data_dir, tmp_path, imgsz):
    """The reference's setting (640, batch 32) and the issue's (320, batch 7: one process at 1 thread gave other
    digits), default vs --threads 1 vs --nproc 2 (1 thread a rank)."""
    runs = {b: (tmp_path / f"default-b{b}", tmp_path / f"threads1-b{b}") for b in (7, 32)}
    command_line_runs([_args(data_dir, imgsz, b, d) for b, (d, _) in runs.items()]
                      + [_args(data_dir, imgsz, b, t) + ["--threads", "1"] for b, (_, t) in runs.items()])
    for b, (default, threads1) in runs.items():
        assert_same_outcome(run_outcome(threads1), run_outcome(default))
    cmd = [sys.executable, "-m", "detval", *_args(data_dir, imgsz, 7, tmp_path / "nproc2"), "--nproc", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_outcome(run_outcome(tmp_path / "nproc2"), run_outcome(runs[7][0]))
