"""[fn(0), ..., fn(n - 1)] with fn(i > 0) in forked children: COCO work split over the cores of one machine.

A forked child inherits the parent's arrays (copy on write: nothing is pickled on the way in, nothing starts up);
only each result comes back, pickled through a pipe. fn(0) runs here meanwhile. An exception in a child is
raised here again (the first one, by index), so a split run fails as the same run in one process would.
Without os.fork (not POSIX) everything runs here, one after the other.
"""
from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from typing import Any


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
