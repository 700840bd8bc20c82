"""Which whole batches each rank runs, and how far the run has come.

Batch ids index the single-device batch plan, so every batch keeps exactly the images (and
the padding shape) it has on one device, and results cannot depend on the number of ranks.
- static: rank r runs a contiguous block fixed in advance (reproducible per-rank timings).
- dynamic: ranks claim the next unclaimed batch from a counter in the shared store, so a slow
  rank (a busier GPU, a slower disk) runs fewer batches and nobody waits at the end.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, Literal

from detval.dist.context import DistContext, raise_if_peer_failed


def static_split(n_batches: int, rank: int, world_size: int) -> list[int]:
    """Rank `rank`'s contiguous share of batches 0..n_batches-1.

    Shares differ in size by at most one, larger ones first; ranks beyond n_batches get [].
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    base, extra = divmod(n_batches, world_size)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (rank < extra)))


class DynamicScheduler:
    """Iterate over the batch ids this rank claims, until all n_batches are claimed.

    `key` names the shared counter; use a fresh key for each pass over a plan in one process
    group (the counter is never reset). Each claim is one atomic store.add, preceded by a
    check of the failure flag so that a rank stops early when a peer has failed. A claim
    happens when the consumer asks for the next id; a DataLoader that prefetches k batches
    claims k ahead of what it has run.
    """

    def __init__(self, ctx: DistContext, n_batches: int, key: str = "detval/next_batch"):
        self.ctx, self.n_batches, self.key = ctx, n_batches, key

    def __iter__(self) -> Iterator[int]:
        if not self.ctx.is_distributed:
            yield from range(self.n_batches)
            return
        while True:
            raise_if_peer_failed(self.ctx)
            batch = self.ctx.store.add(self.key, 1) - 1  # add returns the new value
            if batch >= self.n_batches:
                return
            yield batch


def iter_batches(ctx: DistContext, n_batches: int, mode: Literal["dynamic", "static"] = "dynamic",
                 key: str = "detval/next_batch") -> Iterator[int]:
    """The batch ids this rank runs, in the order it should run them."""
    if mode == "static":
        return iter(static_split(n_batches, ctx.rank, ctx.world_size))
    if mode == "dynamic":
        return iter(DynamicScheduler(ctx, n_batches, key))
    raise ValueError(f"unknown schedule mode {mode!r} (expected 'dynamic' or 'static')")


class ProgressCounter:
    """A run-wide count (images done) that every rank adds to and rank 0 reads for its progress bar."""

    def __init__(self, ctx: DistContext, key: str = "detval/images_done"):
        self.ctx, self.key, self._local = ctx, key, 0

    def add(self, n: int) -> int:
        """Add n (this rank's newly finished images); returns the run-wide total."""
        if self.ctx.store is None:
            self._local += n
            return self._local
        return self.ctx.store.add(self.key, n)

    def total(self) -> int:
        """The run-wide total so far. Raises PeerFailure if a rank has failed."""
        if self.ctx.store is None:
            return self._local
        raise_if_peer_failed(self.ctx)
        return self.ctx.store.add(self.key, 0)

    def wait_for(self, target: int, on_total: Callable[[int], None] | None = None,
                 poll_s: float = 0.2, timeout_s: float | None = None) -> int:
        """Poll until the total reaches target, calling on_total(total) after each poll.

        For rank 0 after its own batches, to keep its progress bar moving while the others
        finish. Raises PeerFailure if a rank fails, TimeoutError if the total does not move for
        timeout_s (default: the context's collective timeout), so that a rank that died
        silently cannot stall rank 0.
        """
        limit = self.ctx.timeout_s if timeout_s is None else timeout_s
        last, deadline = -1, 0.0
        while True:
            total = self.total()
            if on_total is not None:
                on_total(total)
            if total >= target:
                return total
            if total != last:
                last, deadline = total, time.monotonic() + limit
            elif time.monotonic() > deadline:
                raise TimeoutError(f"progress stuck at {total}/{target} for {limit} s")
            time.sleep(poll_s)

