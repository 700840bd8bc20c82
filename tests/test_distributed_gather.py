"""detval.distributed.gather: ragged per-image statistics reach rank 0 bit for bit, in image id order."""
import pytest
import torch

import dist_workers
from dist_workers import assert_bit_identical
from detval.distributed import gather_objects, gather_ragged, launch, single_process_context, sort_by_image


def test_sort_by_image_restores_id_order_and_keeps_rows_with_their_image():
    data = dist_workers.make_ragged(seed=1, n_images=12)
    shuffled = dist_workers.take_images(data, torch.randperm(12, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(shuffled[0], data[0])
    assert_bit_identical(sort_by_image(*shuffled), data)


def test_sort_by_image_by_hand():
    ids, counts = torch.tensor([7, 2, 5]), torch.tensor([2, 0, 1])
    rows = {"x": torch.tensor([70.0, 71.0, 50.0])}
    got_ids, got_rows, got_counts = sort_by_image(ids, rows, counts)
    assert got_ids.tolist() == [2, 5, 7] and got_counts.tolist() == [0, 1, 2]
    assert got_rows["x"].tolist() == [50.0, 70.0, 71.0]


def test_sort_by_image_rejects_repeated_ids():
    with pytest.raises(ValueError, match="more than once"):
        sort_by_image(torch.tensor([3, 1, 3]), {}, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("bad", [
    dict(ids=torch.tensor([0, 1], dtype=torch.int32)),  # wrong dtype
    dict(counts=torch.tensor([1, 1])),  # rows do not add up
])
def test_gather_ragged_checks_its_input(bad):
    args = dict(ids=torch.tensor([0, 1]), counts=torch.tensor([1, 2]), rows={"x": torch.zeros(3)}) | bad
    with pytest.raises((TypeError, ValueError)):
        gather_ragged(single_process_context(), args["ids"], args["rows"], args["counts"])


def test_single_process_gather_sorts_and_returns_everything():
    data = dist_workers.make_ragged(seed=2, n_images=6)
    shuffled = dist_workers.take_images(data, torch.tensor([3, 0, 5, 1, 4, 2]))
    assert_bit_identical(gather_ragged(single_process_context(), *shuffled), data)
    assert gather_objects(single_process_context(), {"t": 1.5}) == [{"t": 1.5}]


@pytest.mark.parametrize("world_size, sizes_list", [
    (2, [[6, 0], [0, 0], [3, 4]]),
    (3, [[0, 4, 5]]),
    (4, [[3, 0, 5, 1], [0, 0, 0, 2]]),
])
def test_gather_ragged_round_trips_bit_identically_in_global_order(world_size, sizes_list):
    cases = [(10 + i, sum(sizes), sizes) for i, sizes in enumerate(sizes_list)]
    results = launch(dist_workers.gather_shares, (cases,), world_size=world_size, timeout_s=60, run_timeout_s=60)
    for (seed, n_images, _), got in zip(cases, results):
        assert_bit_identical(got, dist_workers.make_ragged(seed, n_images))


def test_gather_ragged_onto_another_rank():
    cases = [(20, 9, [4, 0, 5])]
    seen = launch(dist_workers.gather_shares_to, (cases, 2), world_size=3, timeout_s=60, run_timeout_s=60)
    assert seen[0] is None and seen[1] is None
    assert_bit_identical(seen[2][0], dist_workers.make_ragged(20, 9))


@pytest.mark.parametrize("world_size", [2, 3])
def test_exchange_ragged_delivers_each_piece_to_its_rank(world_size):
    n = 23
    got = launch(dist_workers.exchange_shares, (7, n), world_size=world_size, timeout_s=60, run_timeout_s=60)
    data = dist_workers.make_ragged(7, n)
    for r in range(world_size):
        expected = torch.tensor([i for i in range(n) if (i // world_size) % world_size == r], dtype=torch.int64)
        assert_bit_identical(got[r], dist_workers.take_images(data, expected))
