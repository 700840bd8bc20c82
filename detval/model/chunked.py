"""CPU inference a few images at a time, bit-identical to running the whole batch at once.

Why: on the CPU a YOLOv5 forward is bound by memory traffic, not arithmetic. At batch 32 and 640 px every
activation is hundreds of MB (the first Conv's output alone is 210 MB), so each SiLU, Concat and the head's
sigmoid stream through DRAM and fault in fresh pages; a chunk of a few images stays in cache. The whole batch
still gets one output tensor, and the numbers do not change:
- the convolutions, SiLU, pooling, upsampling and concatenation compute each image on its own, provided every
  convolution of the chunks runs the whole batch's backend (oneDNN, forced for the chunks: see chunk_sizes) and
  oneDNN sums in the same order whatever the batch size. The latter held for every shape tried on this CPU
  (all coco128 batches at 320 and 640, random shapes; tests/test_chunked.py) but is not documented, so each
  model checks it once per thread count on a small batch (chunking_is_exact) and otherwise runs batches whole;
- the head's arithmetic is elementwise IEEE (exact whatever the split), except the sigmoid, whose bits
  depend on where torch's thread ranges end (see split_sigmoid.py): each chunk reproduces the whole
  batch's ranges. When that emulation cannot be verified on the running torch, the model runs whole.
Only CPU float32 eval is chunked; CUDA, FP16 and training run as before.
"""
from __future__ import annotations

import torch

from .layers import onednn_convolutions
from .split_sigmoid import SigmoidSplit, calibrate, sigmoid_of_slice

# Pixels per chunk (images x H x W). Measured on a 2-core AVX-512 CPU with yolov5n, batch 32, ms per image
# (whole batch -> chunked): 640x640 82 -> 39 (2 images a chunk), 416x416 27 -> 17-18 (4-8), 320x320
# 15 -> 10 (8-12); at 256x192 and below chunks are no faster. About 1 M pixels a chunk sits in that optimum.
DEFAULT_CHUNK_PIXELS = 1_000_000


def chunk_sizes(batch: int, height: int, width: int, threads: int, chunk_pixels: int | None) -> list[int] | None:
    """Images per chunk for an eval forward of a [batch, 3, height, width] CPU float32 input, or None to run
    the batch whole (when chunks would not help or could change the numbers).

    Only a batch whose every convolution torch sends to oneDNN is chunked (the chunks then run oneDNN too, through
    layers.onednn_convolutions): torch picks oneDNN or its own kernel, which rounds differently, by batch size and
    thread count (ConvParams::use_mkldnn: its own kernel for a single small image, and for a 1x1 filter on one
    thread below 16 images). So: at least 2 images a chunk, and on one thread at least 16 images in the batch.
    """
    if chunk_pixels is None or (threads < 2 and batch < 16):
        return None
    per_chunk = max(2, round(chunk_pixels / (height * width)))
    n_chunks = batch // per_chunk  # rounding down: the remainder is spread, no chunk gets fewer than 2 images
    if n_chunks < 2:
        return None
    base, extra = divmod(batch, n_chunks)
    return [base + 1] * extra + [base] * (n_chunks - extra)


def chunking_is_exact(model, threads: int) -> bool:
    """Whether chunks reproduce the whole batch for this model at `threads` torch threads (== the current count):
    a one-off check on a small random batch, cached on the model, so that a CPU or oneDNN version whose kernels do
    depend on the batch size runs whole batches instead. Also False when the sigmoid split is not reproducible."""
    verdicts = model.__dict__.setdefault("_chunking_exact", {})
    if threads not in verdicts:
        ok = exact_sigmoid_split() is not None
        if ok:  # 16 images: a batch torch runs on oneDNN at any thread count
            x = torch.rand(16, 3, 96, 128, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                whole = model.detect(model.features(x))
                ok = all(torch.equal(chunked_forward(model, x, s), whole) for s in ([2] * 8, [5, 5, 6]))
        verdicts[threads] = ok
    return verdicts[threads]


def exact_sigmoid_split() -> SigmoidSplit | None:
    """The verified sigmoid split at the current torch thread count, or None (run batches whole)."""
    return calibrate(torch.get_num_threads())


def chunked_forward(model, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Eval forward of a DetectionModel over x [B, ch, H, W] (CPU; float32 in 0..1, or uint8 in 0..255, converted
    chunk by chunk), in chunks of `sizes` images.

    Returns float32 [B, N, 5 + nc] exactly as model.detect(model.features(model.as_input(x))) would (same bits).
    """
    split = exact_sigmoid_split()
    if split is None or sum(sizes) != x.shape[0]:
        raise ValueError("chunked_forward: run this batch whole (sigmoid split not reproducible, or bad sizes)")
    detect = model.detect
    batch = x.shape[0]
    out = None
    offsets: list[int] = []
    b0 = 0
    for xb in x.split(sizes):
        with onednn_convolutions():
            maps = detect.raw_maps(model.features(model.as_input(xb)))
        if out is None:
            rows = [p[0].numel() // detect.no for p in maps]  # na * ny * nx rows per image per level
            offsets = [sum(rows[:i]) for i in range(len(rows) + 1)]
            out = torch.empty((batch, offsets[-1], detect.no), dtype=maps[0].dtype)
        for i, p in enumerate(maps):
            per_image = p[0].numel()

            def sigmoid(t, start=b0 * per_image, total=batch * per_image):
                return sigmoid_of_slice(t, start, total, split)

            y = detect.decode(i, p, sigmoid)
            out[b0:b0 + len(xb), offsets[i]:offsets[i + 1]] = y.view(len(xb), -1, detect.no)
        b0 += len(xb)
    return out
