"""detval.distributed.launch: ranks start, rank 0's value comes back, and any failure stops the run fast."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dist_workers
from detval.distributed import LaunchError, launch

REPO = Path(__file__).resolve().parents[1]


def test_rank_zero_value_comes_back_and_ranks_share_the_cores():
    out = launch(dist_workers.describe_ranks, ("tag-42",), world_size=2, timeout_s=30, run_timeout_s=60)
    assert out["tag"] == "tag-42"
    assert [r["rank"] for r in out["ranks"]] == [0, 1]
    assert {(r["world_size"], r["backend"], r["device"]) for r in out["ranks"]} == {(2, "gloo", "cpu")}
    assert {r["threads"] for r in out["ranks"]} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    assert os.getpid() not in {r["pid"] for r in out["ranks"]}


def test_one_device_runs_in_this_process_without_a_group():
    out = launch(dist_workers.describe_ranks, ("solo",), world_size=1)
    (me,) = out["ranks"]
    assert (me["rank"], me["world_size"], me["backend"], me["pid"]) == (0, 1, None, os.getpid())


@pytest.mark.parametrize("world_size, devices", [(3, ["cpu", "cpu"]), (None, ["cpu", "cuda:0"]), (None, [])])
def test_bad_device_lists_are_rejected(world_size, devices):
    with pytest.raises(ValueError):
        launch(dist_workers.describe_ranks, ("x",), world_size=world_size, devices=devices)


def test_a_raising_rank_fails_the_run_fast_naming_rank_and_error():
    start = time.monotonic()
    # timeout_s (per collective) is far above the bound below: the others must be stopped, not time out
    with pytest.raises(LaunchError, match=r"rank 2 failed: ValueError: bad label in img7\.txt") as err:
        launch(dist_workers.fail_on_rank, (2, "bad label in img7.txt"), world_size=3, timeout_s=120)
    assert time.monotonic() - start < 30
    assert err.value.failures[0].rank == 2
    assert "fail_on_rank" in err.value.failures[0].traceback


@pytest.mark.parametrize("how, expected", [("sigkill", "killed by signal SIGKILL"), ("exit", "exited with code 3")])
def test_a_rank_that_dies_without_raising_is_detected(how, expected):
    start = time.monotonic()
    with pytest.raises(LaunchError, match=f"rank 1 failed: {expected}"):
        launch(dist_workers.fail_on_rank, (1, "unused", how), world_size=2, timeout_s=120)
    assert time.monotonic() - start < 30


def test_a_published_failure_stops_peers_before_their_next_collective():
    seen = launch(dist_workers.observe_peer_failure, (1,), world_size=2, timeout_s=30, run_timeout_s=60)
    assert seen == "rank 1 failed: RuntimeError: corrupt image 17"


def test_run_timeout_stops_a_hung_run(tmp_path):
    with pytest.raises(LaunchError, match="run exceeded"):
        launch(dist_workers.wait_forever, (str(tmp_path),), world_size=2, run_timeout_s=5)


def test_ctrl_c_in_the_parent_stops_every_child(tmp_path):
    script = ("import sys, dist_workers\n"
              "from detval.distributed import launch\n"
              "launch(dist_workers.wait_forever, (sys.argv[1],), world_size=2)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("rank*.pid"))) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "ranks did not start"
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("rank*.pid")]
        parent.send_signal(signal.SIGINT)
        _, stderr = parent.communicate(timeout=20)
    finally:
        parent.kill()
    assert parent.returncode != 0 and b"KeyboardInterrupt" in stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_ranks_sharing_a_gpu_use_gloo_one_rank_per_gpu_nccl():
    import torch

    from detval.distributed.launch import backend_for

    cuda = [torch.device("cuda", i) for i in (0, 1)]
    assert backend_for(cuda) == "nccl"
    assert backend_for([cuda[0], cuda[0]]) == "gloo"
    assert backend_for([torch.device("cpu")] * 2) == "gloo"
