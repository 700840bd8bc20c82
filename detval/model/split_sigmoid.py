"""Sigmoid and SiLU of a slice with the bits torch's CPU kernel gives that slice inside the whole tensor at the
reference thread count, whatever the running thread count.

Why this exists: torch evaluates an elementwise op such as `x.sigmoid()` or `silu(x)` on a contiguous float32 CPU
tensor in per-thread ranges (`at::parallel_for`, grain 32768 elements). Within a range it runs a SIMD loop, `unit`
elements per step (2 vectors: 32 floats with AVX-512, 16 with AVX2), and the last `len % unit` elements with
scalar code. The SIMD exp (Sleef) and the scalar one (libm) differ in the last bit for a few percent of inputs, so
an element's bits depend on where the range boundaries fall, i.e. on the tensor's size and the thread count.
val.py's numbers (the shared reference) are torch's at REFERENCE_THREADS threads on the whole batch. A forward that
runs a few images at a time (faster on the CPU: see chunked.py), or at another thread count (--threads 1, or one
thread per rank), reproduces them with `op_of_slice`, which redoes as SIMD the elements this call ran scalar and as
scalar the elements the reference call ran scalar. `calibrate` checks the emulation against the running torch and
returns None when it does not hold (another torch version or kernel): callers then run torch's plain forward.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

GRAIN = 32768  # at::internal::GRAIN_SIZE, the grain TensorIterator passes to at::parallel_for
# The thread count of the reference val.py runs (tests/test_val.py): at 2 threads, a batch's sigmoid is split in
# two ranges, and what torch runs scalar at either range's end is what every detval forward reproduces.
REFERENCE_THREADS = 2
_CANDIDATE_UNITS = (32, 16, 64, 8)  # 2 x SIMD lanes of float32: AVX-512, AVX2, (wider), SSE/NEON

Op = Callable[[torch.Tensor], torch.Tensor]
OPS: dict[str, Op] = {"sigmoid": torch.sigmoid, "silu": torch.nn.functional.silu}


@dataclass(frozen=True)
class SigmoidSplit:
    """How torch splits one elementwise call: threads (intra-op), unit (elements per SIMD step), grain."""

    threads: int
    unit: int
    grain: int = GRAIN


@dataclass(frozen=True)
class ExactSplit:
    """The split of the calls a forward makes (`here`, the running thread count) and of the reference's (`ref`)."""

    here: SigmoidSplit
    ref: SigmoidSplit


def scalar_runs(numel: int, split: SigmoidSplit) -> list[tuple[int, int]]:
    """Flat [start, stop) ranges of a contiguous numel-element tensor that torch computes with scalar code.

    One run per thread range (its last range_len % unit elements); runs are shorter than split.unit.
    """
    if numel <= 0:
        return []
    if numel <= split.grain or split.threads <= 1:
        ranges = [(0, numel)]
    else:
        n_threads = min(split.threads, -(-numel // split.grain))
        chunk = -(-numel // n_threads)
        ranges = [(b, min(numel, b + chunk)) for b in range(0, numel, chunk)]
    runs = []
    for begin, end in ranges:
        tail = (end - begin) % split.unit
        if tail:
            runs.append((end - tail, end))
    return runs


def _vector_op(op: Op, x: torch.Tensor, unit: int) -> torch.Tensor:
    """SIMD-path op of a short 1-D tensor (< unit elements): padded to exactly one SIMD step."""
    buf = x.new_zeros(unit)
    buf[: x.numel()] = x
    return op(buf)[: x.numel()]


def op_of_slice(op: Op, x: torch.Tensor, offset: int, total: int, split: ExactSplit) -> torch.Tensor:
    """op(x) with the bits torch gives these elements when it evaluates the whole tensor in one call at
    split.ref's thread count, computed at split.here's (the running) thread count.

    op: an elementwise float op with a SIMD and a scalar path (OPS). x: contiguous float32 CPU tensor (any shape),
    the flat elements [offset, offset + x.numel()) of a contiguous tensor of `total` elements. Returns a new tensor
    shaped like x.
    """
    y = op(x)
    xf, yf = x.reshape(-1), y.view(-1)
    n = xf.numel()
    for a, b in scalar_runs(n, split.here):  # scalar here because of this call's own boundaries: redo as SIMD
        yf[a:b] = _vector_op(op, xf[a:b], split.here.unit)
    for a, b in scalar_runs(total, split.ref):  # scalar in the reference call: redo as scalar (a call < unit long)
        a, b = max(a - offset, 0), min(b - offset, n)
        if a < b:
            yf[a:b] = op(xf[a:b])
    return y


def sigmoid_of_slice(x: torch.Tensor, offset: int, total: int, split: ExactSplit) -> torch.Tensor:
    """op_of_slice for the sigmoid (the detection head's)."""
    return op_of_slice(torch.sigmoid, x, offset, total, split)


def _discriminating_values(op: Op, n: int) -> torch.Tensor:
    """n inputs whose SIMD and scalar results differ, so any misplaced scalar/SIMD element shows up."""
    pool = torch.randn(1000 * 32, generator=torch.Generator().manual_seed(0)) * 6  # < GRAIN: one serial call
    simd = op(pool)  # a multiple of every candidate unit: no scalar tail
    scalar = torch.cat([op(p) for p in pool.split(min(_CANDIDATE_UNITS) - 1)])
    values = pool[simd != scalar]
    if values.numel() == 0:  # SIMD and scalar agree everywhere: any split reproduces torch
        values = pool
    return values.repeat(-(-n // values.numel()))[:n].contiguous()


@contextlib.contextmanager
def torch_threads(n: int):
    """Within it, torch runs n intra-op threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _reproduces(op: Op, split: ExactSplit) -> bool:
    """Whether slices computed at split.here.threads give torch's whole call at split.ref.threads, bit for bit."""
    # ranges of 49213 and 49212 elements at 2 threads, whose tails differ for every candidate unit; 3 and 4
    # threads split it mid-step too
    total = 2 * (3 * GRAIN // 2 + 61) - 1
    x = _discriminating_values(op, total)
    with torch_threads(split.ref.threads):
        whole = op(x)
    cuts = [0, 5, 40_033, 40_033 + 24_577, 2 * GRAIN + 3, total - 9, total]
    with torch_threads(split.here.threads):
        parts = [op_of_slice(op, x[a:b], a, total, split) for a, b in zip(cuts, cuts[1:])]
        parts.append(op_of_slice(op, x, 0, total, split))  # and the whole tensor in one call
    return torch.equal(torch.cat(parts[:-1]), whole) and torch.equal(parts[-1], whole)


@lru_cache(maxsize=None)
def calibrate(threads: int) -> ExactSplit | None:
    """The split that reproduces, at `threads` threads, torch's own sigmoid and SiLU at REFERENCE_THREADS on this
    machine, or None.

    Checked bit for bit against torch's whole-tensor calls, on inputs whose SIMD and scalar results all differ,
    sized so that thread ranges, slice ends and whole-call tails fall mid-step.
    """
    for unit in _CANDIDATE_UNITS:
        split = ExactSplit(SigmoidSplit(threads, unit), SigmoidSplit(REFERENCE_THREADS, unit))
        if all(_reproduces(op, split) for op in OPS.values()):
            return split
    return None
