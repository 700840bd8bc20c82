"""report/forked.py: independent jobs side by side in forked processes."""
import os

import pytest

from detval.report.forked import run_forked, split_by_cost


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

