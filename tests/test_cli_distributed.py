"""`detval val` on several processes from the command line: --nproc and torchrun print and write exactly what
one process does; a failing rank or Ctrl-C ends the whole run, non-zero, in bounded time."""
import json
import os
import shutil
import socket
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from val_workers import FAULT_ENV, assert_same_outcome, fault_message, run_outcome
from detval.api import validate
from detval.config import ValConfig
from detval.report.table import table_rows

REPO = Path(__file__).resolve().parents[1]
IMGSZ, BATCH = 160, 16


def _val_args(data_dir: Path, run_dir: Path, *extra: str, imgsz: int = IMGSZ, batch: int = BATCH) -> list[str]:
    return ["val", "--weights", str(data_dir / "weights" / "yolov5n.pt"),
            "--data", str(data_dir / "coco128" / "coco128.yaml"), "--imgsz", str(imgsz), "--batch-size", str(batch),
            "--device", "cpu", "--save-txt", "--save-conf", "--verbose", "--no-plots",
            "--project", str(run_dir.parent), "--name", run_dir.name, *extra]


def _torchrun_launcher() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _torchrun() -> list[str]:
    launcher = _torchrun_launcher()
    # --standalone: a free port of its own, so that concurrent runs cannot collide on the default one
    return launcher + ["--standalone", "--nnodes", "1", "--nproc_per_node", "2"]


def _env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([extra.get("PYTHONPATH", ""), str(REPO)]).strip(os.pathsep)
    return env


def _run(cmd: list[str], env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _table(stdout: str) -> list[str]:
    """The metric rows as printed: from the 'all' row to the line before 'Speed:'."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("all "))
    end = next(i for i, line in enumerate(lines) if line.startswith("Speed:"))
    return lines[start:end]


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory) -> dict:
    """One process, in this one: the rows and files every multi-process command must reproduce."""
    cfg = ValConfig(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                    imgsz=IMGSZ, batch_size=BATCH, device="cpu", save_txt=True, save_conf=True, verbose=True,
                    plots=False, quiet=True, project=str(tmp_path_factory.mktemp("one")), name="run")
    r = validate(cfg)
    rows = table_rows(r, verbose=True)
    assert len(rows) == 72 and rows[0].split()[:3] == ["all", "128", "929"]  # 'all' + 71 classes with labels
    return {"rows": rows, "outcome": run_outcome(r.run_dir)}


@pytest.fixture(scope="module", params=["nproc", "torchrun"])
def two_processes(request, data_dir, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess, Path]:
    """`detval val` on two CPU processes, started by detval (--nproc 2) or by torchrun: (launcher, process, run dir)."""
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    if request.param == "nproc":
        cmd = [sys.executable, "-m", "detval", *_val_args(data_dir, run_dir, "--nproc", "2")]
    else:
        cmd = [*_torchrun(), "-m", "detval", *_val_args(data_dir, run_dir)]
    p = _run(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    return request.param, p, run_dir


def test_two_processes_from_the_command_line_match_one(one_process, two_processes):
    launcher, p, run_dir = two_processes
    assert _table(p.stdout) == one_process["rows"]
    assert p.stdout.count("   all   ") == 1  # printed by rank 0 only
    assert_same_outcome(run_outcome(run_dir), one_process["outcome"])
    # one progress bar, counting every rank's images
    assert p.stderr.count("128/128") >= 1 and "Class     Images  Instances" in p.stderr
    if launcher == "nproc":
        assert "x 2 processes" in p.stdout


def test_per_rank_summary_is_printed_and_saved(two_processes):
    _, p, run_dir = two_processes
    lines = p.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.split()[:2] == ["Rank", "Images"]))
    rows = [line.split() for line in lines[at + 1:at + 3]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert sum(int(r[1]) for r in rows) == 128 and sum(int(r[2]) for r in rows) == 8
    assert lines[at + 3].startswith("all 128 images on 2 ranks in ")
    summary = json.loads((run_dir / "results.json").read_text())["distributed"]
    assert summary["world_size"] == 2 and [r["rank"] for r in summary["ranks"]] == [0, 1]
    assert sum(r["images"] for r in summary["ranks"]) == 128
    assert all(r["busy_s"] > 0 for r in summary["ranks"]) and summary["images_per_s"] > 0


@pytest.mark.parametrize("launcher", ["nproc", "torchrun"])
def test_a_rank_failing_mid_run_fails_the_command_naming_it(data_dir, tmp_path, launcher):
    """Every rank process imports a generated sitecustomize.py, which installs val_workers' fault hook."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import val_workers\nval_workers.install_fault_from_env()\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(hook), str(REPO / "tests")]), **{FAULT_ENV: "1:1"})
    run_dir = tmp_path / "run"
    args = _val_args(data_dir, run_dir, "--schedule", "static")  # rank 1 surely runs batches 4-7, fails on 5
    if launcher == "nproc":
        cmd = [sys.executable, "-m", "detval", *args, "--nproc", "2"]
    else:
        cmd = [*_torchrun(), "-m", "detval", *args]
    start = time.monotonic()
    p = _run(cmd, env, timeout=120)
    assert time.monotonic() - start < 90
    expected = f"rank 1 failed: RuntimeError: {fault_message(1, 1)}"
    assert p.returncode != 0 and expected in p.stderr, p.stderr[-3000:]
    if launcher == "nproc":
        assert p.returncode == 2 and f"detval: error: {expected}" in p.stderr
    assert not (run_dir / "results.json").exists()


def test_ctrl_c_stops_every_rank_and_their_loader_workers(data_dir, tmp_path):
    # 320 px in batches of 4: long enough to interrupt while the ranks are in their batch loops
    cmd = [sys.executable, "-m", "detval",
           *_val_args(data_dir, tmp_path / "run", "--nproc", "2", "--workers", "1", imgsz=320, batch=4)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    stderr = _Reader(proc.stderr)
    try:
        deadline = time.monotonic() + 120
        # tqdm's first update after 0/128: rank 0 has run a batch, so the ranks are working
        while not any(f" {n}/128 " in stderr.text for n in range(1, 128)):
            assert proc.poll() is None and time.monotonic() < deadline, stderr.text[-3000:]
            time.sleep(0.1)
        tree = _descendants(proc.pid)
        assert len(tree) >= 4, tree  # two ranks, each with a DataLoader worker
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stderr.join()
    assert proc.returncode == 130 and "detval: interrupted" in stderr.text, stderr.text[-3000:]
    deadline = time.monotonic() + 20  # loader workers notice their rank is gone within a few seconds
    while _alive(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(tree)
    assert not (tmp_path / "run" / "results.json").exists()


class _Reader(threading.Thread):
    """Collects a pipe in the background (tqdm redraws with carriage returns, never a newline)."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.chunks = pipe, []
        self.start()

    def run(self) -> None:
        for chunk in iter(lambda: os.read(self.pipe.fileno(), 4096), b""):
            self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def _descendants(pid: int) -> set[int]:
    """Every process below pid, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    """The pids that still exist and are not zombies."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _dataset_copy(data_dir: Path, root: Path, n: int = 12) -> Path:
    """The first n coco128 images and labels copied under root (a node's own mount); returns its data yaml."""
    src = data_dir / "coco128"
    for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
        (root / sub / "train2017").mkdir(parents=True)
    for image in sorted((src / "images" / "train2017").glob("*.jpg"))[:n]:
        shutil.copy(image, root / "images" / "train2017")
        label = src / "labels" / "train2017" / f"{image.stem}.txt"
        if label.is_file():
            shutil.copy(label, root / "labels" / "train2017")
    shutil.copy(src / "coco128.yaml", root / "coco128.yaml")  # path: . -> this copy
    return root / "coco128.yaml"


def test_two_nodes_reading_their_own_copies_at_different_paths_match_one_process(data_dir, tmp_path):
    """torchrun --nnodes 2 on localhost, one process a node, each node with its dataset at another path."""
    yamls = [_dataset_copy(data_dir, tmp_path / "node0" / "coco"), _dataset_copy(data_dir, tmp_path / "mnt" / "n1")]
    weights = data_dir / "weights" / "yolov5n.pt"

    def args(data: Path, run_dir: Path) -> list[str]:
        return ["val", "--weights", str(weights), "--data", str(data), "--imgsz", "128", "--batch-size", "5",
                "--device", "cpu", "--save-txt", "--save-conf", "--no-plots", "--project", str(run_dir.parent),
                "--name", run_dir.name]

    one = _run([sys.executable, "-m", "detval", *args(yamls[0], tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen([*_torchrun_launcher(), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "detval",
                               *args(yamls[rank], tmp_path / "two")],
                              env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    try:
        outs = [node.communicate(timeout=180) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outs]
    assert _table(outs[0][0]) == _table(one.stdout)
    assert_same_outcome(run_outcome(tmp_path / "two"), run_outcome(tmp_path / "one"))
