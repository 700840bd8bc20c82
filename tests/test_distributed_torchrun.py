"""detval.distributed under torchrun: the same gather, and a failing rank ends the job non-zero with its name."""
import os
import subprocess
import sys
from pathlib import Path

import torch

import dist_workers

REPO = Path(__file__).resolve().parents[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           str(REPO / "tests" / "dist_workers.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)


def test_gather_under_torchrun(tmp_path):
    out = tmp_path / "gathered.pt"
    proc = torchrun("gather", str(out), "7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_images, _ = dist_workers.TORCHRUN_CASE
    dist_workers.assert_bit_identical(torch.load(out), dist_workers.make_ragged(7, n_images))


def test_failing_rank_under_torchrun_exits_nonzero_naming_it():
    proc = torchrun("fail", "1", "label file truncated")
    assert proc.returncode != 0
    assert "rank 1 failed: ValueError: label file truncated" in proc.stderr
