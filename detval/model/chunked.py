"""CPU inference a few images at a time, at any thread count, bit-identical to the reference running the whole batch.

The reference is val.py's torch on the whole batch at split_sigmoid.REFERENCE_THREADS (2) threads. A CPU float32
eval forward computes its bits whatever torch.get_num_threads() is (1 for one rank of several, 2 by default here,
more with --threads) and whatever part of the batch it runs:
- the convolutions, SiLU, pooling, upsampling and concatenation compute each image on its own, provided every
  convolution runs the reference's backend (oneDNN, forced: layers.reference_kernels) and oneDNN sums in the same
  order whatever the batch size and thread count. The latter held for every shape tried on this CPU (all coco128
  batches at 96-640, chunks of 1 image and up, 1 to 4 threads; tests/test_chunked.py) but is not documented, so
  each model checks it once per thread count (reference_split) and otherwise runs torch's plain forward;
- the elementwise SiLU and the head's sigmoid have bits that depend on where torch's thread ranges end (see
  split_sigmoid.py): each call reproduces the reference's ranges; the rest of the head is exact IEEE arithmetic.
Why chunks: on the CPU a YOLOv5 forward is bound by memory traffic, not arithmetic. At batch 32 and 640 px every
activation is hundreds of MB (the first Conv's output alone is 210 MB), so each SiLU, Concat and the head's
sigmoid stream through DRAM and fault in fresh pages; a chunk of a few images stays in cache.
Only CPU float32 eval runs this way; CUDA, FP16 and training run torch's plain forward.
"""
from __future__ import annotations

import torch

from .layers import BatchSlice, reference_kernels
from .split_sigmoid import REFERENCE_THREADS, ExactSplit, calibrate, torch_threads

# Pixels per chunk (images x H x W). Measured on a 2-core AVX-512 CPU with yolov5n, batch 32, ms per image
# (whole batch -> chunked): 640x640 82 -> 39 (2 images a chunk), 416x416 27 -> 17-18 (4-8), 320x320
# 15 -> 10 (8-12); at 256x192 and below chunks are no faster. About 1 M pixels a chunk sits in that optimum.
DEFAULT_CHUNK_PIXELS = 1_000_000


def chunk_sizes(batch: int, height: int, width: int, chunk_pixels: int | None) -> list[int]:
    """Images per chunk for an eval forward of a [batch, 3, height, width] input: about chunk_pixels pixels a chunk,
    [batch] (the batch whole) when that makes one chunk or chunk_pixels is None."""
    if chunk_pixels is None:
        return [batch]
    per_chunk = max(1, round(chunk_pixels / (height * width)))
    n_chunks = batch // per_chunk  # rounding down: the remainder is spread over the chunks
    if n_chunks < 2:
        return [batch]
    base, extra = divmod(batch, n_chunks)
    return [base + 1] * extra + [base] * (n_chunks - extra)


def reference_split(model, threads: int) -> ExactSplit | None:
    """How a forward at `threads` torch threads (== the current count) reproduces the reference, or None when it
    cannot on this machine (torch's plain forward then runs, and its digits depend on the thread count).

    A one-off check, cached on the model: the split emulation (split_sigmoid.calibrate), then the model on a small
    random batch, whole and in chunks of 1, 2-3 images, against torch's own forward at REFERENCE_THREADS threads,
    so that a CPU or oneDNN version whose kernels depend on the batch size or thread count is caught."""
    verdicts = model.__dict__.setdefault("_reference_split", {})
    if threads not in verdicts:
        split = calibrate(threads)
        if split is not None:  # 15 images: the head's sigmoid ranges end mid-step at 2 threads
            s = int(model.stride.max())  # 3 x 4 cells of the coarsest level: 96 x 128 for P5, 192 x 256 for P6
            x = torch.rand(15, 3, 3 * s, 4 * s, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                with torch_threads(REFERENCE_THREADS):
                    reference = model.detect(model.features(x))
                plans = ([15], [2] * 6 + [3], [1] * 15)
                if not all(torch.equal(reference_forward(model, x, s, split), reference) for s in plans):
                    split = None
        verdicts[threads] = split
    return verdicts[threads]


def reference_forward(model, x: torch.Tensor, sizes: list[int], split: ExactSplit) -> torch.Tensor:
    """Eval forward of a DetectionModel over x [B, ch, H, W] (CPU; float32 in 0..1, or uint8 in 0..255, converted
    chunk by chunk), in chunks of `sizes` images, with the reference's bits (see the module docstring).

    Returns float32 [B, N, 5 + nc] as the reference computes model.detect(model.features(model.as_input(x))).
    """
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"reference_forward: chunks {sizes} do not add up to the batch of {x.shape[0]}")
    detect = model.detect
    batch = x.shape[0]
    out = None
    offsets: list[int] = []
    b0 = 0
    for xb in x.split(sizes):
        with reference_kernels(BatchSlice(b0, batch, split)):
            maps = detect.raw_maps(model.features(model.as_input(xb)))
            if out is None:
                rows = [p[0].numel() // detect.no for p in maps]  # na * ny * nx rows per image per level
                offsets = [sum(rows[:i]) for i in range(len(rows) + 1)]
                out = torch.empty((batch, offsets[-1], detect.no), dtype=maps[0].dtype)
            for i, p in enumerate(maps):
                out[b0:b0 + len(xb), offsets[i]:offsets[i + 1]] = detect.decode(i, p).view(len(xb), -1, detect.no)
        b0 += len(xb)
    return out
