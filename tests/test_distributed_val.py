"""Multi-process `detval val` (gloo on CPU) gives exactly the single-process result, and fails cleanly.

Every run is yolov5n on coco128 at 160 px: small enough to be quick, with several batches to share out.
"Exactly" means results.json's metrics, maps and per-class rows, per_class.csv and the --save-txt files
are byte for byte those of one process.
"""
import json
import time
from pathlib import Path

import pytest

import val_workers
from val_workers import assert_same_outcome, run_outcome
from detval.api import validate
from detval.config import ValConfig
from detval.distributed import (LaunchError, RankLoad, dynamic_split, launch, rank_loads, run_scaling, static_split,
                         summary_lines)

IMGSZ = 160
N_IMAGES = 128
BATCHES = {16: 8, 64: 2}  # batch size -> batches in the plan of coco128


def _cfg(data_dir: Path, run_dir: Path, batch_size: int = 16, **kw) -> ValConfig:
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                imgsz=IMGSZ, batch_size=batch_size, device="cpu", save_txt=True, save_conf=True, plots=False,
                quiet=True, project=str(run_dir.parent), name=run_dir.name, exist_ok=True)
    base.update(kw)
    return ValConfig(**base)


@pytest.fixture(scope="module")
def single(data_dir, tmp_path_factory) -> dict[int, dict]:
    """One process, no process group: the outcome each batch size must give on any number of ranks."""
    root = tmp_path_factory.mktemp("single")
    out = {}
    for batch_size in BATCHES:
        r = validate(_cfg(data_dir, root / f"b{batch_size}", batch_size))
        out[batch_size] = run_outcome(r.run_dir)
        res = out[batch_size]["results"]
        # a real, non-trivial run, so that agreeing with it means something
        assert (res["images"], res["instances"]) == (N_IMAGES, 929)
        assert 0 < res["metrics"]["mAP50-95"] < res["metrics"]["mAP50"] < 1
        assert len(out[batch_size]["labels"]) > 100
    return out


def test_plots_are_the_same_on_two_processes(data_dir, tmp_path):
    one = validate(_cfg(data_dir, tmp_path / "one", plots=True))
    two = validate(_cfg(data_dir, tmp_path / "two", plots=True, nproc=2))
    outcome = run_outcome(one.run_dir)
    names = outcome["plots"].keys()
    # PR, F1, P, R curves and both confusion matrices; labels and predictions of the first three batches
    assert len([n for n in names if n.endswith(".png")]) == 6
    assert sorted(n for n in names if n.endswith(".jpg")) == [f"val_batch{i}_{kind}.jpg" for i in range(3)
                                                               for kind in ("labels", "pred")]
    assert_same_outcome(run_outcome(two.run_dir), outcome)


def test_data_parallel_mode_matches_one_process(data_dir, tmp_path, single):
    """--dp wraps the model in torch's DataParallel (on the CPU it calls the model as it is; on GPUs it splits each
    batch: not run here, this machine has none)."""
    r = validate(_cfg(data_dir, tmp_path / "run", dp=True))
    assert_same_outcome(run_outcome(r.run_dir), single[16])


@pytest.mark.parametrize("world_size, schedule", [(2, "dynamic"), (3, "static")])
def test_validate_on_several_processes_matches_one_exactly(data_dir, tmp_path, single, world_size, schedule):
    # 3 static ranks get uneven shares of the 8 batches (3, 3, 2)
    r = validate(_cfg(data_dir, tmp_path / "run", nproc=world_size, schedule=schedule))
    assert r.images == N_IMAGES
    assert_same_outcome(run_outcome(r.run_dir), single[16])


@pytest.mark.slow
def test_four_ranks_both_schedules_and_more_ranks_than_batches(data_dir, tmp_path, single):
    """One 4-rank process group runs three validations in turn (each with its own store keys, as a fresh run).

    Batch size 64 leaves coco128 two batches: two ranks (static) or at least two (dynamic) run nothing.
    """
    cases = [(16, "dynamic"), (64, "static"), (64, "dynamic")]
    cfgs = [_cfg(data_dir, tmp_path / f"b{b}-{s}", b, schedule=s) for b, s in cases]
    passes = launch(val_workers.validate_passes, (cfgs,), world_size=4, timeout_s=120, run_timeout_s=300)
    for (batch_size, schedule), (result, claimed) in zip(cases, passes):
        assert_same_outcome(run_outcome(result.run_dir), single[batch_size])
        # whole batches, each run by exactly one rank
        n = BATCHES[batch_size]
        assert sorted(b for mine in claimed for b in mine) == list(range(n)), (batch_size, schedule)
        if schedule == "static":
            assert claimed == [static_split(n, rank, 4) for rank in range(4)]
        if batch_size == 64:
            assert sum(not mine for mine in claimed) >= 2  # idle ranks took part without deadlock


def test_a_rank_given_bad_input_the_others_do_not_see_ends_the_run(data_dir, tmp_path):
    """Rank 2 fails before its first collective while its peers run batches, then wait in the gather.
    (A rank failing mid-run: tests/test_cli_distributed.py, through the command line.)"""
    good = _cfg(data_dir, tmp_path / "run")
    bad = _cfg(data_dir, tmp_path / "run", data=str(tmp_path / "missing.yaml"))
    start = time.monotonic()
    with pytest.raises(LaunchError, match=r"^rank 2 failed: DataError: .*missing\.yaml"):
        launch(val_workers.validate_per_rank, ([good, good, bad],), world_size=3, timeout_s=300)
    assert time.monotonic() - start < 60


def test_ranks_that_read_different_image_sets_refuse_to_report(data_dir, tmp_path):
    images = sorted((data_dir / "coco128" / "images" / "train2017").glob("*.jpg"))
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in images[:-1]))  # one image fewer
    (tmp_path / "fewer.yaml").write_text(f"path: {tmp_path}\nval: list.txt\nnames: {[str(c) for c in range(80)]}\n")
    good = _cfg(data_dir, tmp_path / "run")
    fewer = _cfg(data_dir, tmp_path / "run", data=str(tmp_path / "fewer.yaml"))
    with pytest.raises(LaunchError, match="disagree"):
        launch(val_workers.validate_per_rank, ([good, fewer],), world_size=2, timeout_s=120, run_timeout_s=120)


def test_check_same_raises_on_every_rank_and_names_the_odd_one():
    seen = launch(val_workers.check_values, (["plan-a", "plan-b", "plan-c"],), world_size=3, timeout_s=60,
                  run_timeout_s=60)
    agreeing, disagreeing = seen
    assert agreeing == [None, None, None]
    # every rank raises (none is left waiting in a later collective), with the same message
    assert disagreeing == ["ValueError: ranks disagree on the dataset: rank 1 has 'plan-b', rank 0 has 'plan-a' "
                           "(ranks [1, 2] differ from rank 0)"] * 3


# --- dynamic schedule with a DataLoader's lookahead (pure) ---------------------------------------------------

@pytest.mark.parametrize("n, world, lookahead", [(4, 2, 4), (8, 2, 2), (16, 3, 4), (2, 4, 4), (0, 2, 3), (9, 2, 0)])
def test_dynamic_split_heads_and_pool_cover_every_batch_once(n, world, lookahead):
    splits = [dynamic_split(n, r, world, lookahead) for r in range(world)]
    pools = {tuple(pool) for _, pool in splits}
    assert len(pools) == 1  # every rank claims from the same list
    (pool,) = pools
    heads = [head for head, _ in splits]
    everything = [b for head in heads for b in head] + list(pool)
    assert sorted(everything) == list(range(n))  # each batch exactly once
    for r, head in enumerate(heads):
        share = static_split(n, r, world)
        assert head == share[:lookahead]  # what a prefetching loader takes first is the rank's own


def test_dynamic_split_with_lookahead_keeps_a_small_plan_shared():
    # coco128 at batch 32 is 4 batches; a DataLoader with 2 workers asks for 4 ids up front
    assert dynamic_split(4, 0, 2, lookahead=4) == ([0, 1], [])
    assert dynamic_split(4, 1, 2, lookahead=4) == ([2, 3], [])
    # a long plan keeps most batches in the pool, for the dynamic balance at the end
    head, pool = dynamic_split(100, 1, 4, lookahead=4)
    assert head == [25, 26, 27, 28] and len(pool) == 84 and pool[:5] == [4, 5, 6, 7, 8]
    assert dynamic_split(5, 0, 2) == ([], [0, 1, 2, 3, 4])  # no lookahead: every batch is claimed
    with pytest.raises(ValueError):
        dynamic_split(4, 0, 2, lookahead=-1)


# --- per-rank summary (pure) -----------------------------------------------------------------------------------

def test_rank_loads_and_run_scaling_arithmetic():
    loads = rank_loads([(48, 3, 2.0), (48, 3, 1.5), (32, 2, 1.0)])
    assert loads[1] == RankLoad(rank=1, images=48, batches=3, busy_s=1.5)
    assert loads[1].images_per_s == 32.0
    s = run_scaling(loads, wall_s=2.5)
    assert s.world_size == 3 and s.images_per_s == 128 / 2.5
    assert s.busy_share == pytest.approx(4.5 / 7.5)
    assert s.speedup is None and s.efficiency is None
    b = run_scaling(loads, wall_s=2.5, baseline_images_per_s=25.6)
    assert b.speedup == pytest.approx(2.0) and b.efficiency == pytest.approx(2.0 / 3)
    data = b.to_json()
    assert data["world_size"] == 3 and data["ranks"][1]["images_per_s"] == 32.0
    assert json.loads(json.dumps(data)) == data
    with pytest.raises(ValueError):
        run_scaling([], 1.0)
    with pytest.raises(ValueError):
        run_scaling(loads, 0.0)


def test_summary_lines_show_every_rank_and_the_aggregate():
    loads = rank_loads([(128, 2, 4.0), (0, 0, 0.0)])  # a rank with no work: 0 images/s, not a division error
    lines = summary_lines(run_scaling(loads, wall_s=4.0, baseline_images_per_s=40.0))
    assert lines[0].split() == ["Rank", "Images", "Batches", "Busy", "s", "Images/s"]
    assert lines[1].split() == ["0", "128", "2", "4.00", "32.0"]
    assert lines[2].split() == ["1", "0", "0", "0.00", "0.0"]
    assert lines[3] == ("all 128 images on 2 ranks in 4.00 s: 32.0 images/s, ranks busy 50% of the time "
                        "(0.80x one process, 40% efficiency)")
    assert "one process" not in summary_lines(run_scaling(loads, wall_s=4.0))[-1]
