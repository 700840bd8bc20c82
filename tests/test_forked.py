"""detval/forked.py: fork_map (results in order, fn(0) here, failures raised in the parent) and run_forked
(independent jobs side by side, failures as lines)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from detval.forked import available_cores, fork_map, run_forked, split_by_cost


def test_split_by_cost_balances_and_keeps_order():
    assert split_by_cost([4.5, 4.5, 1, 1, 1, 1], 2) == [[0, 2, 4], [1, 3, 5]]
    assert split_by_cost([1, 1, 1], 1) == [[0, 1, 2]]
    assert split_by_cost([1, 2], 5) == [[1], [0]]  # empty groups dropped
    assert split_by_cost([], 3) == []


def _writer(path, text):
    def job():
        path.write_text(f"{text} {os.getpid()}")
    return job


def _fails(message):
    def job():
        raise ValueError(message)
    return job


def test_every_job_runs_once_some_in_other_processes(tmp_path):
    files = [tmp_path / f"{i}.txt" for i in range(5)]
    errors = run_forked([_writer(f, i) for i, f in enumerate(files)], [1.0] * 5, processes=3)
    assert errors == []
    contents = [f.read_text().split() for f in files]
    assert [c[0] for c in contents] == ["0", "1", "2", "3", "4"]
    pids = {int(c[1]) for c in contents}
    assert os.getpid() in pids and len(pids) == 3


@pytest.mark.parametrize("processes", [1, 2])
def test_failures_are_reported_and_do_not_stop_the_others(tmp_path, processes):
    ok = tmp_path / "ok.txt"
    errors = run_forked([_fails("first"), _writer(ok, "x"), _fails("second")], [1.0, 1.0, 1.0], processes)
    assert sorted(errors) == ["ValueError: first", "ValueError: second"]
    assert ok.is_file()


def _dies():
    os._exit(3)


def test_a_process_that_dies_is_a_line_not_a_hang(tmp_path):
    ok = tmp_path / "ok.txt"
    errors = run_forked([_writer(ok, "x"), _dies], [1.0, 1.0], processes=2)
    assert errors == ["RuntimeError: a worker process ended with status 3"]
    assert ok.is_file()


def test_results_in_order_and_children_are_other_processes():
    here = os.getpid()
    big = np.arange(10 ** 6)             # inherited, not pickled
    out = fork_map(lambda i: (i, os.getpid() == here, int(big[i])), 4)
    assert [o[0] for o in out] == [0, 1, 2, 3] and [o[2] for o in out] == [0, 1, 2, 3]
    assert [o[1] for o in out] == [True, False, False, False]


def test_a_failing_child_raises_its_error_here():
    def fn(i):
        if i == 2:
            raise ValueError("share 2 is bad")
        return i

    with pytest.raises(ValueError, match="share 2 is bad"):
        fork_map(fn, 3)


def test_an_unpicklable_error_still_reports():
    class Local(Exception):
        pass

    def fn(i):
        if i:
            raise Local("from a child")
        return i

    with pytest.raises(RuntimeError, match="Local: from a child"):
        fork_map(fn, 2)


def test_one_process_runs_here():
    assert fork_map(lambda i: os.getpid(), 1) == [os.getpid()]
    assert available_cores() >= 1
