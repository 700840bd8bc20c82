"""Run independent jobs side by side in forked processes: the run's figures once the table is printed.

When the last batch is done the cores are idle while rank 0 draws one figure after another (matplotlib is
single-threaded). A forked child inherits the imported modules and the job's arrays: no pickling, no start-up.
Each job writes its own file, so the output does not depend on how the jobs were split. The children touch no
CUDA and no process group, and leave with os._exit. Off Linux (macOS forbids fork after some system frameworks
start; Windows has none), or for one process, the jobs run here, one after the other.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

Job = Callable[[], None]


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
    raised ("ExceptionType: message"); a job's failure does not stop the others."""
    groups = split_by_cost(costs, processes if sys.platform.startswith("linux") else 1)
    children = []
    for group in groups[1:]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: run the group, report failures through the pipe, never return into the caller
            os.close(read_fd)
            code = 0
            try:
                errors = _run_group(jobs, group)
                os.write(write_fd, "\n".join(errors).encode())
            except BaseException:  # noqa: BLE001 -- a child must not unwind into the parent's code
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        children.append((pid, read_fd, group))
    errors = _run_group(jobs, groups[0]) if groups else []
    for pid, read_fd, group in children:
        with os.fdopen(read_fd, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        errors += [line for line in report.splitlines() if line]
        if os.waitstatus_to_exitcode(status) != 0:
            errors.append(f"a drawing process ended with status {os.waitstatus_to_exitcode(status)}")
    return errors


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
