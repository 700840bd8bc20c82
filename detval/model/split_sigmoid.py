"""Sigmoid of a slice with the exact bits torch's CPU kernel gives that slice inside the whole tensor.

Why this exists: torch evaluates `x.sigmoid()` on a contiguous float32 CPU tensor in per-thread ranges
(`at::parallel_for`, grain 32768 elements). Within a range it runs a SIMD loop, `unit` elements per step
(2 vectors: 32 floats with AVX-512, 16 with AVX2), and the last `len % unit` elements with scalar code.
The SIMD exp (Sleef) and the scalar one (libm) differ in the last bit for a few percent of inputs, so an
element's bits depend on where the range boundaries fall, i.e. on the tensor's size and the thread count.
Running the detection head a few images at a time (much faster on the CPU: see chunked.py) therefore
changes a handful of sigmoid outputs per image unless each chunk reproduces the whole batch's boundaries,
which `sigmoid_of_slice` does. `calibrate` checks the emulation against the running torch and returns
None when it does not hold (another torch version or kernel): callers then run the whole batch at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

GRAIN = 32768  # at::internal::GRAIN_SIZE, the grain TensorIterator passes to at::parallel_for
_CANDIDATE_UNITS = (32, 16, 64, 8)  # 2 x SIMD lanes of float32: AVX-512, AVX2, (wider), SSE/NEON


@dataclass(frozen=True)
class SigmoidSplit:
    """How torch splits one sigmoid call: threads (intra-op), unit (elements per SIMD step), grain."""

    threads: int
    unit: int
    grain: int = GRAIN


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


def _vector_sigmoid(x: torch.Tensor, unit: int) -> torch.Tensor:
    """SIMD-path sigmoid of a short 1-D tensor (< unit elements): padded to exactly one SIMD step."""
    buf = x.new_zeros(unit)
    buf[: x.numel()] = x
    return buf.sigmoid()[: x.numel()]


def sigmoid_of_slice(x: torch.Tensor, offset: int, total: int, split: SigmoidSplit) -> torch.Tensor:
    """sigmoid(x) with the bits torch gives these elements when it evaluates the whole tensor in one call.

    x: contiguous float32 CPU tensor (any shape), the flat elements [offset, offset + x.numel()) of a
    contiguous tensor of `total` elements. Returns a new tensor shaped like x.
    """
    y = x.sigmoid()
    xf, yf = x.reshape(-1), y.view(-1)
    n = xf.numel()
    for a, b in scalar_runs(n, split):  # scalar here because of the slice's own boundaries: redo as SIMD
        yf[a:b] = _vector_sigmoid(xf[a:b], split.unit)
    for a, b in scalar_runs(total, split):  # scalar in the whole call: redo as scalar (a call < unit long)
        a, b = max(a - offset, 0), min(b - offset, n)
        if a < b:
            yf[a:b] = xf[a:b].sigmoid()
    return y


def _discriminating_values(n: int) -> torch.Tensor:
    """n inputs whose SIMD and scalar sigmoids differ, so any misplaced scalar/SIMD element shows up."""
    pool = torch.randn(1000 * 32, generator=torch.Generator().manual_seed(0)) * 6  # < GRAIN: one serial call
    simd = pool.sigmoid()  # a multiple of every candidate unit: no scalar tail
    scalar = torch.cat([p.sigmoid() for p in pool.split(min(_CANDIDATE_UNITS) - 1)])
    values = pool[simd != scalar]
    if values.numel() == 0:  # SIMD and scalar agree everywhere: any split reproduces torch
        values = pool
    return values.repeat(-(-n // values.numel()))[:n].contiguous()


@lru_cache(maxsize=None)
def calibrate(threads: int) -> SigmoidSplit | None:
    """The split that reproduces torch's own sigmoid on this machine at `threads` threads, or None.

    Checked bit for bit against torch's whole-tensor call, on inputs whose SIMD and scalar results all
    differ, sized so that thread ranges, slice ends and whole-call tails fall mid-step.
    torch.get_num_threads() must equal `threads`.
    """
    # 2 threads: ranges of 49213 and 49212 elements, whose tails differ for every candidate unit
    total = 2 * (3 * GRAIN // 2 + 61) - 1
    x = _discriminating_values(total)
    whole = x.sigmoid()
    cuts = [0, 5, 40_033, 40_033 + 24_577, 2 * GRAIN + 3, total - 9, total]
    for unit in _CANDIDATE_UNITS:
        split = SigmoidSplit(threads, unit)
        parts = [sigmoid_of_slice(x[a:b], a, total, split) for a, b in zip(cuts, cuts[1:])]
        if torch.equal(torch.cat(parts), whole):
            return split
    return None
