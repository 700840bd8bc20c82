"""Per-rank functions for the detval.distributed tests.

They live in a module, not in the test files, because spawned ranks import them by name.
Run as a script under torchrun:
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_workers.py gather OUT.pt SEED
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_workers.py fail RANK MESSAGE
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from detval.distributed import (
    DistContext, PeerFailure, ProgressCounter, barrier, exchange_ragged, gather_objects, gather_ragged,
    iter_batches, publish_failure, raise_if_peer_failed, run_under_torchrun,
)
from detval.distributed.gather import Ragged


# --- test data ---------------------------------------------------------------------------------

def make_ragged(seed: int, n_images: int) -> Ragged:
    """Random per-image statistics in ascending image id order, with the dtypes the engine uses.

    Ids are distinct but not contiguous; some images have no rows; floats include values whose
    bits a lossy round trip would change (nan, -0.0, inf, subnormals).
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(10 * n_images + 1, generator=g)[:n_images].sort().values
    counts = torch.randint(0, 5, (n_images,), generator=g)
    n = int(counts.sum())
    pred = torch.randn(n, 6, generator=g, dtype=torch.float32)
    special = torch.tensor([float("nan"), -0.0, float("inf"), 1e-45], dtype=torch.float32)
    if n:
        pred.view(-1)[: len(special)] = special[: pred.numel()]
    rows = {
        "pred": pred,
        "conf": torch.rand(n, generator=g, dtype=torch.float64),
        "correct": torch.rand(n, 10, generator=g) > 0.5,
        "cls": torch.randint(0, 80, (n,), generator=g),
    }
    return ids, rows, counts


def assert_bit_identical(got: Ragged, expected: Ragged) -> None:
    """Same ids, counts, row names, dtypes, shapes and bytes (nan payloads and -0.0 included)."""
    (ids, rows, counts), (ids_e, rows_e, counts_e) = got, expected
    assert torch.equal(ids, ids_e) and torch.equal(counts, counts_e)
    assert rows.keys() == rows_e.keys()
    for name in rows_e:
        a, b = rows[name], rows_e[name]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), name
        assert a.numpy().tobytes() == b.numpy().tobytes(), name


def take_images(data: Ragged, order: torch.Tensor) -> Ragged:
    """The images at positions `order` (in that order), each with its own rows."""
    ids, rows, counts = data
    starts = torch.cumsum(counts, 0) - counts
    row_index = torch.cat([torch.arange(int(starts[i]), int(starts[i] + counts[i])) for i in order.tolist()]
                          or [torch.zeros(0, dtype=torch.int64)])
    return ids[order], {k: v[row_index] for k, v in rows.items()}, counts[order]


def rank_share(seed: int, n_images: int, sizes: list[int], rank: int) -> Ragged:
    """Rank `rank`'s part of make_ragged(seed, n_images): sizes[r] random images, in shuffled order."""
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(n_images, generator=g)
    start = sum(sizes[:rank])
    return take_images(make_ragged(seed, n_images), perm[start:start + sizes[rank]])


# --- rank functions: fn(ctx, *args) ---------------------------------------------------------------

def gather_shares(ctx: DistContext, cases: list[tuple[int, int, list[int]]]) -> list[Ragged] | None:
    """For each case (seed, n_images, sizes), gather this rank's share; rank 0 returns the results."""
    results = [gather_ragged(ctx, *rank_share(seed, n, sizes, ctx.rank)) for seed, n, sizes in cases]
    return results if ctx.is_main else None


def gather_shares_to(ctx: DistContext, cases: list[tuple[int, int, list[int]]], dst: int) -> list | None:
    """gather_shares onto rank dst; rank 0 returns what each rank got back (a list of results on dst, None
    elsewhere)."""
    results = [gather_ragged(ctx, *rank_share(seed, n, sizes, ctx.rank), dst=dst) for seed, n, sizes in cases]
    return gather_objects(ctx, results if ctx.rank == dst else None)


def exchange_shares(ctx: DistContext, seed: int, n_images: int) -> list | None:
    """Rank k holds images i with i % world == k and sends those with (i // world) % world == r to rank r; rank 0
    returns what each rank received."""
    data, w = make_ragged(seed, n_images), ctx.world_size
    pieces = [take_images(data, torch.tensor([i for i in range(n_images) if i % w == ctx.rank and (i // w) % w == r],
                                             dtype=torch.int64).flip(0)) for r in range(w)]
    return gather_objects(ctx, exchange_ragged(ctx, pieces))


def describe_ranks(ctx: DistContext, tag: str) -> dict:
    """Rank 0 returns every rank's view of itself and the tag it was given."""
    me = {"rank": ctx.rank, "world_size": ctx.world_size, "backend": ctx.backend, "device": str(ctx.device),
          "threads": torch.get_num_threads(), "pid": os.getpid()}
    views = gather_objects(ctx, me)
    return {"tag": tag, "ranks": views} if ctx.is_main else None


def claim_batches(ctx: DistContext, passes: list[int], slow_rank: int, slow_s: float, fast_s: float) -> list | None:
    """One dynamic schedule per entry of passes (its n_batches), one rank slower per batch.

    Rank 0 returns, per pass, {"claimed": [batch ids of each rank], "progress": final progress total}.
    """
    out = []
    for i, n_batches in enumerate(passes):
        progress = ProgressCounter(ctx, key=f"test/progress{i}")
        barrier(ctx)  # start together, so that claims reflect speed, not start-up order
        mine = []
        for batch in iter_batches(ctx, n_batches, mode="dynamic", key=f"test/batch{i}"):
            time.sleep(slow_s if ctx.rank == slow_rank else fast_s)
            mine.append(batch)
            progress.add(1)
        total = progress.wait_for(n_batches, poll_s=0.02) if ctx.is_main else None
        out.append({"claimed": gather_objects(ctx, mine), "progress": total})
    return out if ctx.is_main else None


def fail_on_rank(ctx: DistContext, bad_rank: int, message: str, how: str = "raise") -> None:
    """Rank bad_rank fails (raises ValueError(message), SIGKILLs or _exits itself); the others block in a collective."""
    if ctx.rank == bad_rank:
        time.sleep(0.2)  # let the others reach the collective first
        if how == "raise":
            raise ValueError(message)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    gather_objects(ctx, ctx.rank)


def observe_peer_failure(ctx: DistContext, bad_rank: int) -> str | None:
    """bad_rank publishes a failure (and returns); the others return what raise_if_peer_failed raised."""
    if ctx.rank == bad_rank:
        publish_failure(ctx, "RuntimeError: corrupt image 17")
        return None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            raise_if_peer_failed(ctx)
        except PeerFailure as exc:
            return str(exc)
        time.sleep(0.01)
    return None


def wait_forever(ctx: DistContext, ready_dir: str) -> None:
    """Write this rank's pid to ready_dir, then sleep until killed."""
    Path(ready_dir, f"rank{ctx.rank}.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(1)


# --- torchrun entry ------------------------------------------------------------------------------

TORCHRUN_CASE = (9, [4, 5])  # (n_images, images per rank) of the torchrun gather test: 2 ranks


def _torchrun_gather(ctx: DistContext, out: str, seed: int) -> None:
    n_images, sizes = TORCHRUN_CASE
    result = gather_shares(ctx, [(seed, n_images, sizes)])
    if ctx.is_main:
        torch.save(result[0], out)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "gather":
        run_under_torchrun(_torchrun_gather, (rest[0], int(rest[1])), device="cpu", timeout_s=60)
    elif mode == "fail":
        run_under_torchrun(fail_on_rank, (int(rest[0]), rest[1]), device="cpu", timeout_s=60)
    else:
        sys.exit(f"unknown mode {mode!r}")
