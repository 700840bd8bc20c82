"""Per-rank functions for the multi-process `detval val` tests, and a fault hook for command-line runs.

They live in a module, not in the test files, because spawned ranks import them by name. Each runs the
real `detval.run.run_rank` over a real process group; apart from the fault hook, nothing here changes what a
rank computes.

Fault hook: with DETVAL_TEST_FAULT="RANK:AFTER" in the environment, `install_fault_from_env()` makes rank
RANK raise once it has run AFTER batches (use the static schedule, so that it surely gets more). A
command-line test puts a generated sitecustomize.py on PYTHONPATH that calls it, so that every rank
process (spawned or torchrun's) installs it at start-up.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import torch.distributed as tdist

from detval import distributed
from detval.run import run_rank
from detval.config import ValConfig
from detval.distributed import DistContext
from short_diff import assert_equal

FAULT_ENV = "DETVAL_TEST_FAULT"


# --- what a run must give on any number of ranks ----------------------------------------------------------------

def run_outcome(run_dir: Path) -> dict:
    """The parts of a run folder that must not depend on the number of processes: results.json's images,
    instances, metrics, maps and per-class rows, per_class.csv, the --save-txt and --save-json files and the plots."""
    res = json.loads((Path(run_dir) / "results.json").read_text())
    return {
        "results": {k: res[k] for k in ("images", "instances", "metrics", "maps", "per_class")},
        "per_class.csv": (Path(run_dir) / "per_class.csv").read_text(),
        "labels": {p.name: p.read_text() for p in sorted((Path(run_dir) / "labels").glob("*.txt"))},
        "plots": {p.name: p.read_bytes() for p in sorted([*Path(run_dir).glob("*.png"),
                                                          *Path(run_dir).glob("*.jpg")])},
        "json": {p.name: p.read_bytes() for p in sorted(Path(run_dir).glob("*_predictions.json"))},
    }


def assert_same_outcome(got: dict, expected: dict) -> None:
    """Bit for bit: floats compared exactly, files byte for byte."""
    for part in ("results", "per_class.csv", "labels", "plots", "json"):
        assert_equal(got.get(part), expected.get(part), part)


# --- rank functions: fn(ctx, *args) -----------------------------------------------------------------------------


def validate_passes(ctx: DistContext, cfgs: list[ValConfig]) -> list | None:
    """run_rank once per cfg in one process group.

    Rank 0 returns [(result, batch ids each rank was handed, by rank)] per cfg. Each pass gets its
    own key space in the shared store, as a fresh run would have: the dynamic schedule's batch
    counter and the progress count start from zero again.
    """
    real = distributed.iter_batches
    out = []
    for i, cfg in enumerate(cfgs):
        claimed: list[int] = []

        def recording(*args, **kwargs):
            for batch in real(*args, **kwargs):
                claimed.append(batch)
                yield batch

        distributed.iter_batches = recording
        try:
            store = tdist.PrefixStore(f"pass{i}/", ctx.store) if ctx.store is not None else None
            result = run_rank(replace(ctx, store=store), cfg)
        finally:
            distributed.iter_batches = real
        out.append((result, distributed.gather_objects(ctx, claimed)))
    return out if ctx.is_main else None


def check_values(ctx: DistContext, values: list[str]) -> tuple | None:
    """check_same twice: first every rank with values[0], then rank r with values[r].

    Rank 0 returns, for each call, every rank's error message (None where it passed), by rank.
    """
    seen = []
    for mine in (values[0], values[ctx.rank]):
        try:
            distributed.check_same(ctx, mine, "the dataset")
            error = None
        except ValueError as e:
            error = f"ValueError: {e}"
        seen.append(distributed.gather_objects(ctx, error))
    return tuple(seen) if ctx.is_main else None


def validate_per_rank(ctx: DistContext, cfgs: list[ValConfig]) -> object:
    """run_rank with rank r's own config cfgs[r]: a rank that is given input the others do not see."""
    return run_rank(ctx, cfgs[ctx.rank])


def fault_message(rank: int, after: int) -> str:
    return f"injected fault on rank {rank} after {after} batches"


def install_fault_from_env() -> None:
    """Install the fault DETVAL_TEST_FAULT="RANK:AFTER[:kill]" names (no-op when unset); with ':kill' the rank
    SIGKILLs itself instead of raising (as the OOM killer would end it)."""
    spec = os.environ.get(FAULT_ENV)
    if spec:
        rank, after, *how = spec.split(":")
        _install_fault(int(rank), int(after), kill=how == ["kill"])


def _install_fault(bad_rank: int, after: int, kill: bool = False) -> None:
    """Make rank bad_rank raise in its batch loop once it has run `after` batches through the model.

    Two patches on this process: the scheduler (run_rank hands `detval.distributed.iter_batches` its context)
    tells which rank this process is, and NMS, which the batch step calls once per batch right after the
    model, raises on that rank's batch after + 1. Its peers are then running batches or waiting in the
    gather. A rank handed no more than `after` batches does not fail.
    """
    import detval.inference as inference

    state = {"rank": None, "batches": 0}
    real_iter, real_nms = distributed.iter_batches, inference.nms_candidates

    def iter_batches(ctx, *args, **kwargs):
        state["rank"] = ctx.rank
        return real_iter(ctx, *args, **kwargs)

    def nms_candidates(*args, **kwargs):
        if state["rank"] == bad_rank:
            if state["batches"] >= after:
                if kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(fault_message(bad_rank, after))
            state["batches"] += 1
        return real_nms(*args, **kwargs)

    distributed.iter_batches, inference.nms_candidates = iter_batches, nms_candidates
