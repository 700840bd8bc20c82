"""Who this process is in a validation run, and the process group that joins the ranks.

A `DistContext` is the only handle the rest of detval gets: a single process has one with
`world_size == 1` and no process group, so every caller runs one code path. Ranks share a
key-value store (the process group's rendezvous store); besides the scheduler's batch
counter it carries a failure flag, so that a rank that raised makes its peers stop before
their next collective instead of waiting for the collective timeout.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 600.0
"""Bound on any one collective or store wait. Long enough for the slowest rank's last batches."""

_FAILURE_KEY = "detval/failure"
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class PeerFailure(RuntimeError):
    """Another rank published a failure; this rank stops instead of entering a collective."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a run.

    `device` is where the model runs; `backend` is "nccl" (CUDA devices), "gloo" (CPU) or
    None for a single process without a process group. `store` is the shared key-value store
    (None for a single process); `timeout_s` bounds every collective and store wait.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    timeout_s: float = DEFAULT_TIMEOUT_S
    store: dist.Store | None = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def collective_device(self) -> torch.device:
        """Where tensors must live for a collective: NCCL moves only CUDA memory, gloo only host memory."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def single_process_context(device: str | torch.device = "cpu") -> DistContext:
    """The context of a run on one device, with no process group."""
    return DistContext(rank=0, world_size=1, local_rank=0, device=torch.device(device), backend=None)


def torchrun_env_present() -> bool:
    """True when this process was started by torchrun (or anything that sets its variables)."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def from_torchrun_env(device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group torchrun set up (env:// rendezvous).

    device: "cpu" runs every rank on the CPU (gloo); anything else, or None when CUDA is
    available, runs rank r on cuda:LOCAL_RANK (nccl), as YOLOv5 does under torchrun.
    """
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"not started by torchrun: {', '.join(missing)} not set")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device != "cpu" and (device is not None or torch.cuda.is_available())
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return _join_group(rank, world_size, local_rank, dev, timeout_s, store=None)


def connect(rank: int, world_size: int, device: torch.device, host: str, port: int,
            timeout_s: float = DEFAULT_TIMEOUT_S, backend: str | None = None) -> DistContext:
    """Join a single-node process group whose store is served at host:port (see launch.py). backend: None for
    nccl on CUDA, gloo on the CPU; "gloo" also for ranks that share a GPU."""
    store = dist.TCPStore(host, port, is_master=False, timeout=_timedelta(timeout_s))
    return _join_group(rank, world_size, rank, torch.device(device), timeout_s, store=store, backend=backend)


def _join_group(rank: int, world_size: int, local_rank: int, device: torch.device, timeout_s: float,
                store: dist.Store | None, backend: str | None = None) -> DistContext:
    if device.type == "cuda":
        # Before the group exists, so that NCCL binds this rank to its own GPU, not GPU 0.
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    kwargs = {"init_method": "env://"} if store is None else {"store": store}
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=_timedelta(timeout_s), **kwargs)
    if store is None:
        store = dist.distributed_c10d._get_default_store()
    return DistContext(rank, world_size, local_rank, device, backend, timeout_s, store)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (a no-op for a single process)."""
    if ctx.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def publish_failure(ctx: DistContext, message: str) -> bool:
    """Tell the peers that this rank failed. True if this is the run's first published failure.

    Best effort (True when the store cannot be reached): the store may be what failed.
    """
    if ctx.store is None:
        return True
    flag = f"rank {ctx.rank} failed: {message}"
    try:
        return ctx.store.compare_set(_FAILURE_KEY, "", flag).decode(errors="replace") == flag
    except Exception:  # noqa: BLE001 - the original failure matters, not this one
        return True


def published_failure(ctx: DistContext) -> str | None:
    """The first failure any rank has published ("rank R failed: ..."), or None. One store round trip."""
    if ctx.store is None or not ctx.store.check([_FAILURE_KEY]):
        return None
    return ctx.store.get(_FAILURE_KEY).decode(errors="replace")


def raise_if_peer_failed(ctx: DistContext) -> None:
    """Raise PeerFailure if any rank has published a failure."""
    message = published_failure(ctx)
    if message is not None:
        raise PeerFailure(message)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if ctx.is_distributed:
        raise_if_peer_failed(ctx)
        # NCCL otherwise guesses the device from the rank and warns.
        dist.barrier(device_ids=[ctx.device.index] if ctx.backend == "nccl" else None)


def _timedelta(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)
