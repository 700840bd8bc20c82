"""detval.coco.fork_map: results in order, fn(0) here, failures raised in the parent."""
from __future__ import annotations

import os

import numpy as np
import pytest

from detval.coco.fork_map import available_cores, fork_map


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
