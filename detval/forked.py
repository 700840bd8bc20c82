"""Work split over the cores of one machine in forked processes: COCO evaluation and JSON, the run's figures.

fork_map: [fn(0), ..., fn(n - 1)] with fn(i > 0) in forked children. A forked child inherits the parent's modules
and arrays (copy on write: nothing is pickled on the way in, nothing starts up); only each result comes back,
pickled through a pipe. fn(0) runs here meanwhile. An exception in a child is raised here again (the first one,
by index), so a split run fails as the same run in one process would. Without os.fork everything runs here, one
after the other. The children touch no CUDA and no process group, and leave with os._exit.

run_forked: independent jobs (each writes its own file) in groups of near-equal cost, one group per process; a
job that fails is a line, not an exception. Off Linux (macOS forbids fork after some system frameworks start,
which matplotlib may) the jobs run here.
"""
from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

Job = Callable[[], None]


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fork_map(fn: Callable[[int], Any], n: int) -> list:
    """[fn(i) for i in range(n)], fn(i > 0) in n - 1 forked processes. Results must be picklable."""
    if n <= 1 or not hasattr(os, "fork"):
        return [fn(i) for i in range(n)]
    children = [_start(fn, i) for i in range(1, n)]
    results, errors = [None] * n, [None] * n
    try:
        results[0] = fn(0)
    except BaseException as e:  # noqa: BLE001 -- reap the children first, then raise
        errors[0] = e
    for i, (pid, read_fd) in enumerate(children, 1):
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        try:
            ok, value = pickle.loads(payload)
        except Exception:  # noqa: BLE001 -- the child died before it could report
            ok, value = False, RuntimeError(f"a worker process ended with status {os.waitstatus_to_exitcode(status)}")
        results[i], errors[i] = (value, None) if ok else (None, value)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


def _start(fn: Callable[[int], Any], i: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    os.close(read_fd)  # child: never returns into the caller's code
    code = 0
    try:
        try:
            payload = pickle.dumps((True, fn(i)), pickle.HIGHEST_PROTOCOL)
        except BaseException as e:  # noqa: BLE001 -- reported to the parent, raised there
            payload = pickle.dumps((False, _picklable(e)), pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


def split_by_cost(costs: Sequence[float], groups: int) -> list[list[int]]:
    """Job indices in `groups` groups of near-equal total cost (largest first onto the lightest group);
    empty groups dropped, each group in its jobs' original order."""
    loads = [0.0] * max(1, groups)
    members: list[list[int]] = [[] for _ in loads]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        g = loads.index(min(loads))
        loads[g] += costs[i]
        members[g].append(i)
    return [sorted(m) for m in members if m]


def run_forked(jobs: Sequence[Job], costs: Sequence[float], processes: int) -> list[str]:
    """Run every job once, in up to `processes` processes (this one included). Returns one line per job that
    raised ("ExceptionType: message"); a job's failure does not stop the others. A process that dies is
    one line naming its exit status, in place of every job's lines (the files the jobs wrote stay)."""
    groups = split_by_cost(costs, processes if sys.platform.startswith("linux") else 1)
    try:
        reports = fork_map(lambda g: _run_group(jobs, groups[g]), len(groups))
    except Exception as e:  # noqa: BLE001 -- a child died (or could not report): said, not raised
        return [f"{type(e).__name__}: {e}"]
    return [line for report in reports for line in report]


def _run_group(jobs: Sequence[Job], group: list[int]) -> list[str]:
    errors = []
    for i in group:
        try:
            jobs[i]()
        except Exception as e:  # noqa: BLE001 -- reported to the caller, which warns
            if os.environ.get("DETVAL_DEBUG"):
                traceback.print_exc(file=sys.stderr)
            errors.append(f"{type(e).__name__}: {e}")
    return errors
