"""Start one process per device, run a function on each, and stop them all when one fails.

Two entry points, one per way a multi-device run starts:
- `launch(fn, ...)`: detval's own launcher (`--device 0,1,2,3`, `--device cpu --nproc N`).
  The parent serves the ranks' store and watches every child; when one raises or dies, the
  others are terminated at once (they may be blocked in a collective on the dead peer and
  would otherwise wait for the collective timeout), and the error names the rank.
- `run_under_torchrun(fn, ...)`: the per-rank main under torchrun. A failure is published to
  the peers, printed as "rank R failed: ..." and turned into a non-zero exit, which makes
  torchrun's agent stop the other ranks.
In both, `fn(ctx, *args)` runs with a joined `DistContext`.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

import torch
import torch.distributed as dist

from detval.distributed.context import (
    DEFAULT_TIMEOUT_S, DistContext, PeerFailure, connect, from_torchrun_env, publish_failure, shutdown,
    single_process_context,
)

_HOST = "127.0.0.1"
_TERMINATE_GRACE_S = 3.0  # SIGTERM first so children can release resources, then SIGKILL


@dataclass(frozen=True)
class RankFailure:
    """Why one rank did not finish.

    `message` is "ExcType: text" for an exception, or says how the process ended
    ("killed by signal SIGKILL", "exited with code 3"); `traceback` is empty for the latter.
    """

    rank: int
    message: str
    traceback: str = ""
    secondary: bool = False  # the rank only stopped because a peer had failed


class LaunchError(RuntimeError):
    """A multi-process run failed. `failures[0]` is the root cause; str() names its rank and error."""

    def __init__(self, failures: list[RankFailure]):
        # Root cause first. A rank that died without a report (signal, os._exit) cannot be
        # reacting to a peer: reactions are exceptions, and exceptions are reported. So within
        # one arrival it goes before ranks whose collective broke because a peer vanished.
        # sorted is stable: otherwise arrival order.
        self.failures = sorted(failures, key=lambda f: (f.secondary, bool(f.traceback)))
        first = self.failures[0]
        text = f"rank {first.rank} failed: {first.message}"
        if first.traceback:
            text += f"\n{first.traceback.rstrip()}"
        others = [f"rank {f.rank}: {f.message}" for f in self.failures[1:]]
        if others:
            text += "\nalso: " + "; ".join(others)
        super().__init__(text)


def launch(fn: Callable[..., Any], args: tuple = (), world_size: int | None = None,
           devices: list[str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
           threads_per_rank: int | None = None, run_timeout_s: float | None = None) -> Any:
    """Run `fn(ctx, *args)` on `world_size` ranks and return rank 0's return value.

    fn and args must be picklable (a module-level function): children are spawned, not forked,
    so that CUDA and thread pools start clean. devices: one torch device string per rank
    ("cuda:0", ..., or "cpu"); None means every rank on the CPU. One rank runs in this process,
    without a process group. timeout_s bounds each collective (a peer that hangs is reported,
    not waited for); run_timeout_s, if given, bounds the whole run. Each child uses
    threads_per_rank torch threads, by default this machine's cores shared evenly.
    Raises LaunchError if any rank raises, exits non-zero or is killed; KeyboardInterrupt
    stops every child before it propagates.
    """
    devs = _resolve_devices(world_size, devices)
    if len(devs) == 1:
        return fn(single_process_context(devs[0]), *args)
    threads = threads_per_rank or max(1, len(os.sched_getaffinity(0)) // len(devs))
    # The parent serves the store, so it outlives any rank (unlike env://, where rank 0 holds it),
    # and port 0 lets the OS pick a free port with no race between choosing and binding it.
    store = dist.TCPStore(_HOST, 0, is_master=True, wait_for_workers=False)
    spawn = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    readers: list[Connection] = []
    try:
        for rank, dev in enumerate(devs):
            reader, writer = spawn.Pipe(duplex=False)
            # Not daemonic: a rank's DataLoader needs worker processes of its own.
            proc = spawn.Process(
                target=_rank_main, name=f"detval-rank{rank}",
                args=(fn, args, rank, len(devs), dev, backend_for(devs), store.port, timeout_s, threads, writer,
                      os.getpid()))
            proc.start()
            writer.close()  # the child holds the only writer, so EOF means the child is gone
            procs.append(proc)
            readers.append(reader)
        return _watch(procs, readers, run_timeout_s)
    finally:
        _stop(procs)
        for reader in readers:
            reader.close()


def run_under_torchrun(fn: Callable[..., Any], args: tuple = (), device: str | None = None,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Per-rank main for a script started by torchrun: join, run `fn(ctx, *args)`, leave.

    Returns fn's value on every rank. On an exception the failure is published to the peers,
    "rank R failed: ..." and the traceback go to stderr, and the process exits with code 1
    at once (no teardown that could block on a dead peer).
    """
    ctx = from_torchrun_env(device, timeout_s)
    try:
        value = fn(ctx, *args)
    except BaseException as exc:  # noqa: BLE001 - any failure must end this rank visibly
        message, tb = _describe(exc)
        publish_failure(ctx, message)
        print(f"rank {ctx.rank} failed: {message}\n{tb}", file=sys.stderr, flush=True)
        os._exit(1)
    shutdown(ctx)
    return value


def _resolve_devices(world_size: int | None, devices: list[str] | None) -> list[torch.device]:
    if devices is None:
        return [torch.device("cpu")] * (1 if world_size is None else world_size)
    if not devices:
        raise ValueError("no devices")
    devs = [torch.device(f"cuda:{d}" if str(d).isdigit() else d) for d in devices]
    if world_size is not None and world_size != len(devs):
        raise ValueError(f"world_size {world_size} does not match {len(devs)} devices {devices}")
    if len({d.type for d in devs}) > 1:
        raise ValueError(f"cannot mix device types in one run: {devices}")
    return devs


def backend_for(devs: list[torch.device]) -> str:
    """nccl for one rank per GPU; gloo on the CPU and when ranks share a GPU (NCCL refuses that; gloo moves
    the collectives' host copies, the model still runs on the GPU)."""
    return "nccl" if devs[0].type == "cuda" and len(set(devs)) == len(devs) else "gloo"


def _rank_main(fn: Callable[..., Any], args: tuple, rank: int, world_size: int, device: torch.device, backend: str,
               port: int, timeout_s: float, threads: int, conn: Connection, parent_pid: int) -> None:
    """Body of one spawned rank: report ("ok", value) or ("error", message, traceback, secondary)."""
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the parent alone decides how the children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _fork_helpers_like_torchrun()
    torch.set_num_threads(threads)
    ctx: DistContext | None = None
    try:
        ctx = connect(rank, world_size, device, _HOST, port, timeout_s, backend)
        value = fn(ctx, *args)
        shutdown(ctx)
        # Plain pickle: torch's multiprocessing pickler would pass tensors as shared memory that
        # this process, about to exit, must keep alive until the parent has mapped it.
        conn.send_bytes(pickle.dumps(("ok", value if rank == 0 else None)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        message, tb = _describe(exc)
        # A failure published before this one was likely its cause (this rank's collective
        # broke when the failed peer exited).
        first = publish_failure(ctx, message) if ctx is not None else True
        secondary = isinstance(exc, PeerFailure) or not first
        try:
            conn.send_bytes(pickle.dumps(("error", message, tb, secondary)))
        finally:
            # Skip interpreter teardown: it could block on collectives with a dead peer.
            os._exit(1)


def _watch(procs: list, readers: list[Connection], run_timeout_s: float | None) -> Any:
    """Wait for every rank; return rank 0's value, or raise LaunchError at the first failure."""
    deadline = None if run_timeout_s is None else time.monotonic() + run_timeout_s
    reports: dict[int, tuple | None] = {}  # None: the pipe closed without a report
    failed: dict[int, RankFailure] = {}  # in order of arrival
    running = set(range(len(procs)))
    while running and not failed:
        waiting = [readers[r] for r in running if r not in reports] + [procs[r].sentinel for r in running]
        ready = set(wait(waiting, timeout=None if deadline is None else max(0.0, deadline - time.monotonic())))
        if not ready:
            ranks = ", ".join(map(str, sorted(running)))
            raise LaunchError([RankFailure(min(running), f"run exceeded {run_timeout_s} s (ranks {ranks} still running)")])
        for r in sorted(running):
            exited = procs[r].sentinel in ready
            if exited or readers[r] in ready:
                _read_report(r, readers[r], reports)
            if exited:
                procs[r].join()
                running.discard(r)
            failure = _failure(r, procs[r].exitcode if exited else None, reports.get(r), exited)
            if failure is not None:
                failed[r] = failure
    if failed:
        # A report sent at about the same time may hold the root cause: a peer of a rank that
        # raised sees a closed connection only once that rank has sent its report and exited.
        for r in sorted(running - set(failed)):
            _read_report(r, readers[r], reports)
            failure = _failure(r, None, reports.get(r), exited=False)
            if failure is not None:
                failed[r] = failure
        raise LaunchError(list(failed.values()))
    return reports[0][1]


def _read_report(rank: int, reader: Connection, reports: dict[int, tuple | None]) -> None:
    if rank in reports:
        return
    try:
        if reader.poll():
            reports[rank] = pickle.loads(reader.recv_bytes())
    except (EOFError, OSError):
        reports[rank] = None  # the child died before reporting; its exit code tells why


def _failure(rank: int, exitcode: int | None, report: tuple | None, exited: bool) -> RankFailure | None:
    """The failure a rank's report and (once it has exited) exit code show; None while it looks fine."""
    if report is not None and report[0] == "error":
        _, message, tb, secondary = report
        return RankFailure(rank, message, tb, secondary)
    if not exited:
        return None
    if exitcode is not None and exitcode < 0:
        return RankFailure(rank, f"killed by signal {signal.Signals(-exitcode).name}")
    if exitcode:
        return RankFailure(rank, f"exited with code {exitcode}")
    if report is None:
        return RankFailure(rank, "exited without reporting a result")
    return None


def _stop(procs: list) -> None:
    """Terminate every child still running; SIGKILL those that ignore SIGTERM for too long."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _fork_helpers_like_torchrun() -> None:
    """Let this rank's own helper processes (DataLoader workers) fork, as they do under torchrun.

    A spawned child inherits the "spawn" start method, so each DataLoader worker would start a
    fresh interpreter and import torch and detval again: seconds per worker on a loaded machine,
    paid again at every run, often more than the whole validation at small image sizes.
    """
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this child if the parent dies (Linux), so no rank is orphaned."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _describe(exc: BaseException) -> tuple[str, str]:
    """("ExcType: message", formatted traceback) of an exception."""
    message = f"{type(exc).__name__}: {exc}".strip()
    return message, "".join(traceback.format_exception(exc))
