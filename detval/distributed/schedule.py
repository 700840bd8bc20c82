"""Which whole batches each rank runs, and how far the run has come.

Batch ids index the single-device batch plan, so every batch keeps exactly the images (and
the padding shape) it has on one device, and results cannot depend on the number of ranks.
- static: rank r runs a contiguous block fixed in advance (reproducible per-rank timings).
- dynamic: ranks claim the next unclaimed batch from a counter in the shared store, so a slow
  rank (a busier GPU, a slower disk) runs fewer batches and nobody waits at the end.
  A DataLoader asks for `workers x prefetch_factor` batch ids before it runs the first one, so
  the first rank to start would claim that many at once, all of a small plan (coco128 at batch
  32 is 4 batches: one rank ran them all while the other idled). With `lookahead` set to that
  depth, each rank starts with its own first `lookahead` batches of its static share, and only
  the rest is claimed from the shared counter.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, Literal

from detval.distributed.context import DistContext, raise_if_peer_failed


def static_split(n_batches: int, rank: int, world_size: int) -> list[int]:
    """Rank `rank`'s contiguous share of batches 0..n_batches-1.

    Shares differ in size by at most one, larger ones first; ranks beyond n_batches get [].
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    base, extra = divmod(n_batches, world_size)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (rank < extra)))


def dynamic_split(n_batches: int, rank: int, world_size: int, lookahead: int = 0) -> tuple[list[int], list[int]]:
    """(rank's own head, the shared pool) of the dynamic schedule.

    The head is the first `lookahead` batches of the rank's static share (`static_split`); the pool,
    claimed from a counter by every rank, is all other batches in ascending order (the same list on
    every rank). lookahead 0: no heads, every batch is claimed; lookahead >= the largest share: static.
    """
    if lookahead < 0:
        raise ValueError(f"lookahead must be >= 0, got {lookahead}")
    heads = [static_split(n_batches, r, world_size)[:lookahead] for r in range(world_size)]
    taken = {b for head in heads for b in head}
    return heads[rank], [b for b in range(n_batches) if b not in taken]


class DynamicScheduler:
    """Iterate over the batch ids this rank runs: its head, then claims from the pool until it is empty.

    `key` names the shared counter; use a fresh key for each pass over a plan in one process
    group (the counter is never reset). Each claim is one atomic store.add, preceded by a
    check of the failure flag so that a rank stops early when a peer has failed. A claim
    happens when the consumer asks for the next id; a DataLoader that prefetches k batches
    claims k ahead of what it has run, which `lookahead` (see `dynamic_split`) keeps from
    taking work from the other ranks at the start.
    """

    def __init__(self, ctx: DistContext, n_batches: int, key: str = "detval/next_batch", lookahead: int = 0):
        self.ctx, self.n_batches, self.key, self.lookahead = ctx, n_batches, key, lookahead

    def __iter__(self) -> Iterator[int]:
        if not self.ctx.is_distributed:
            yield from range(self.n_batches)
            return
        head, pool = dynamic_split(self.n_batches, self.ctx.rank, self.ctx.world_size, self.lookahead)
        for batch in head:
            raise_if_peer_failed(self.ctx)
            yield batch
        while True:
            raise_if_peer_failed(self.ctx)
            claim = self.ctx.store.add(self.key, 1) - 1  # add returns the new value
            if claim >= len(pool):
                return
            yield pool[claim]


def iter_batches(ctx: DistContext, n_batches: int, mode: Literal["dynamic", "static"] = "dynamic",
                 key: str = "detval/next_batch", lookahead: int = 0) -> Iterator[int]:
    """The batch ids this rank runs, in the order it should run them.

    lookahead: how many ids the consumer takes before it has run the first (for a DataLoader,
    num_workers x prefetch_factor); only the dynamic schedule uses it.
    """
    if mode == "static":
        return iter(static_split(n_batches, ctx.rank, ctx.world_size))
    if mode == "dynamic":
        return iter(DynamicScheduler(ctx, n_batches, key, lookahead))
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

