"""detval.distributed.schedule: static split, dynamic claims from the shared store, progress counter."""
import pytest
import torch

import dist_workers
from detval.distributed import DistContext, ProgressCounter, iter_batches, launch, single_process_context, static_split


@pytest.mark.parametrize("n_batches", [0, 1, 3, 4, 7, 10])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_static_split_covers_every_batch_once_contiguously(n_batches, world_size):
    shares = [static_split(n_batches, r, world_size) for r in range(world_size)]
    # in rank order, the shares are 0..n-1 exactly: each batch once, each share contiguous
    assert [b for share in shares for b in share] == list(range(n_batches))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_static_split_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        static_split(4, 2, 2)


def test_iter_batches_static_uses_the_split_without_a_process_group():
    ctx = DistContext(rank=1, world_size=3, local_rank=1, device=torch.device("cpu"), backend="gloo")
    assert list(iter_batches(ctx, 7, mode="static")) == [3, 4]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_single_process_runs_every_batch_in_order(mode):
    assert list(iter_batches(single_process_context(), 5, mode=mode)) == [0, 1, 2, 3, 4]


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="schedule mode"):
        iter_batches(single_process_context(), 5, mode="round-robin")


def test_progress_counter_counts_locally_in_a_single_process():
    progress = ProgressCounter(single_process_context())
    progress.add(3)
    assert progress.add(4) == 7
    assert progress.total() == 7
    assert progress.wait_for(7) == 7


def test_progress_counter_wait_for_times_out_when_stuck():
    progress = ProgressCounter(single_process_context())
    with pytest.raises(TimeoutError):
        progress.wait_for(1, poll_s=0.01, timeout_s=0.05)


def test_dynamic_schedule_gives_a_slow_rank_fewer_batches_and_covers_all_once():
    passes = [24, 1, 0]  # the last two leave ranks without work: they must not deadlock
    out = launch(dist_workers.claim_batches, (passes, 1, 0.25, 0.01), world_size=3, timeout_s=60, run_timeout_s=60)
    for n_batches, result in zip(passes, out):
        claimed = result["claimed"]
        assert sorted(b for rank in claimed for b in rank) == list(range(n_batches))
        assert all(rank == sorted(rank) for rank in claimed)  # the counter only moves up
        assert result["progress"] == n_batches
    first = out[0]["claimed"]
    assert len(first[1]) < 24 / 3 < max(len(first[0]), len(first[2]))
