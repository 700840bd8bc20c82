"""Bring every rank's per-image statistics to rank 0, in global image order.

Statistics are ragged: image i owns counts[i] consecutive rows of every tensor in `rows`.
Each rank packs its tensors into one byte buffer (so any dtype round-trips bit for bit and
one collective carries everything), rank 0 gathers the buffers, unpacks them and sorts the
images by global id. Exactly one code path for gloo and NCCL: buffers travel on
`ctx.collective_device`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from detval.distributed.context import DistContext, raise_if_peer_failed

Ragged = tuple[Tensor, dict[str, Tensor], Tensor]
"""(image_ids Tensor[int64, n], rows {name: Tensor[n_rows, ...]}, counts Tensor[int64, n])."""


@dataclass(frozen=True)
class _Layout:
    """What one rank sends: enough for rank 0 to cut its buffer back into tensors."""

    n_images: int
    rows: dict[str, tuple[torch.dtype, tuple[int, ...], int]]  # name -> (dtype, shape, nbytes)

    @property
    def nbytes(self) -> int:
        return 16 * self.n_images + sum(nbytes for _, _, nbytes in self.rows.values())  # ids + counts: int64


def sort_by_image(image_ids: Tensor, rows: dict[str, Tensor], counts: Tensor) -> Ragged:
    """Reorder ragged per-image data into ascending image id order.

    image_ids: Tensor[int64, n], distinct; counts: Tensor[int64, n], rows per image;
    rows: {name: Tensor[counts.sum(), ...]}, image i's rows contiguous, images in image_ids order.
    Each image's rows keep their relative order. Raises ValueError on a repeated image id.
    """
    _check_ragged(image_ids, rows, counts)
    order = torch.argsort(image_ids, stable=True)
    sorted_ids = image_ids[order]
    repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if repeated.numel():
        raise ValueError(f"image ids appear more than once: {repeated.unique()[:10].tolist()}")
    new_position = torch.empty_like(order)
    new_position[order] = torch.arange(len(order), device=order.device)
    row_image = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    row_order = torch.argsort(new_position[row_image], stable=True)
    return sorted_ids, {k: v[row_order] for k, v in rows.items()}, counts[order]


def gather_ragged(ctx: DistContext, image_ids: Tensor, rows: dict[str, Tensor], counts: Tensor,
                  dst: int = 0) -> Ragged | None:
    """All ranks' ragged statistics, concatenated and sorted by image id, on rank dst; None elsewhere.

    Arguments as in `sort_by_image`, for this rank's images only (n may be 0). Every rank must
    pass the same row names; a name's dtype and trailing shape must agree between ranks that
    have rows for it (a rank without rows may pass any empty tensor). Dtypes are preserved
    exactly; results are on the device of rank dst's image_ids. Collective: every rank calls it.
    """
    _check_ragged(image_ids, rows, counts)
    if not ctx.is_distributed:
        return sort_by_image(image_ids, rows, counts)
    names = sorted(rows)
    mine = _Layout(len(image_ids), {k: (rows[k].dtype, tuple(rows[k].shape), _nbytes(rows[k])) for k in names})
    layouts: list[_Layout] = _all_gather_objects(ctx, mine)
    _check_layouts(layouts)  # on every rank, so that all raise together rather than hang

    size = max(layout.nbytes for layout in layouts)
    packed = torch.zeros(size, dtype=torch.uint8, device=ctx.collective_device)
    parts = [image_ids, counts] + [rows[k] for k in names]
    if mine.nbytes:
        packed[:mine.nbytes] = torch.cat([_as_bytes(t).to(ctx.collective_device) for t in parts])
    received = [torch.empty_like(packed) for _ in layouts] if ctx.rank == dst else None
    if size:  # gloo rejects empty buffers; every rank knows size, so all skip together
        dist.gather(packed, received, dst=dst)
    if ctx.rank != dst:
        return None
    if not size:
        return sort_by_image(image_ids, rows, counts)

    out_device = image_ids.device
    pieces = [_unpack(buf, layout, names, out_device) for buf, layout in zip(received, layouts)]
    all_ids = torch.cat([p[0] for p in pieces])
    all_counts = torch.cat([p[2] for p in pieces])
    all_rows = {k: _cat_rows([p[1][k] for p in pieces], rows[k]) for k in names}
    return sort_by_image(all_ids, all_rows, all_counts)


def gather_objects(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every rank's small picklable `obj` (per-rank timings, counts), by rank, on rank 0; None elsewhere."""
    if not ctx.is_distributed:
        return [obj]
    gathered = _all_gather_objects(ctx, obj)
    return gathered if ctx.is_main else None


def exchange_ragged(ctx: DistContext, pieces: list[Ragged]) -> Ragged:
    """All-to-all: pieces[r] is this rank's ragged share for rank r (one per rank, arguments as in
    `sort_by_image`); returns what every rank sent to this rank, concatenated and sorted by image id.
    For work split by something other than the image (a category, a class) after each rank has processed its
    own images. Collective: every rank calls it, with world_size pieces."""
    if len(pieces) != ctx.world_size:
        raise ValueError(f"exchange_ragged: {len(pieces)} pieces for {ctx.world_size} ranks")
    mine = None
    for dst, piece in enumerate(pieces):
        got = gather_ragged(ctx, *piece, dst=dst)
        mine = got if dst == ctx.rank else mine
    return mine


def check_same(ctx: DistContext, value: str, what: str) -> None:
    """Raise ValueError on every rank unless every rank passes the same value.

    For what each rank derives on its own but all must share, such as a digest of the images and
    the batch plan it read: batch ids only mean the same images on every rank if the plans agree,
    and a rank that read a changed file would otherwise make the metrics silently wrong.
    Collective: every rank calls it (and all raise together, so none is left waiting).
    """
    if not ctx.is_distributed:
        return
    values = _all_gather_objects(ctx, value)
    odd = [rank for rank, v in enumerate(values) if v != values[0]]
    if odd:
        raise ValueError(f"ranks disagree on {what}: rank {odd[0]} has {values[odd[0]]!r}, rank 0 has {values[0]!r}"
                         + (f" (ranks {odd} differ from rank 0)" if len(odd) > 1 else ""))


def _all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    raise_if_peer_failed(ctx)
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _check_ragged(image_ids: Tensor, rows: dict[str, Tensor], counts: Tensor) -> None:
    if image_ids.dtype != torch.int64 or counts.dtype != torch.int64:
        raise TypeError(f"image_ids and counts must be int64, got {image_ids.dtype} and {counts.dtype}")
    if image_ids.dim() != 1 or counts.shape != image_ids.shape:
        raise ValueError(f"image_ids {tuple(image_ids.shape)} and counts {tuple(counts.shape)} must be equal 1-D")
    if counts.numel() and counts.min() < 0:
        raise ValueError("negative row count")
    n_rows = int(counts.sum())
    for name, t in rows.items():
        if t.dim() == 0 or t.shape[0] != n_rows:
            raise ValueError(f"rows[{name!r}] has shape {tuple(t.shape)}, expected {n_rows} rows (counts.sum())")


def _check_layouts(layouts: list[_Layout]) -> None:
    names = set(layouts[0].rows)
    for rank, layout in enumerate(layouts):
        if set(layout.rows) != names:
            raise ValueError(f"rank {rank} sends rows {sorted(layout.rows)}, rank 0 sends {sorted(names)}")
    for name in names:
        kinds = {(dtype, shape[1:]) for layout in layouts for dtype, shape, _ in [layout.rows[name]] if shape[0]}
        if len(kinds) > 1:
            raise ValueError(f"rows[{name!r}] differ in dtype or trailing shape between ranks: {sorted(map(str, kinds))}")


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _as_bytes(t: Tensor) -> Tensor:
    """The raw bytes of t, flat (Tensor[uint8, nbytes])."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def _from_bytes(buf: Tensor, dtype: torch.dtype, shape: tuple[int, ...], device: torch.device) -> Tensor:
    # clone: a slice may start at an offset not aligned for dtype, which view() rejects
    return buf.clone().view(dtype).reshape(shape).to(device)


def _unpack(buf: Tensor, layout: _Layout, names: list[str], device: torch.device) -> Ragged:
    n = layout.n_images
    ids = _from_bytes(buf[:8 * n], torch.int64, (n,), device)
    counts = _from_bytes(buf[8 * n:16 * n], torch.int64, (n,), device)
    rows, start = {}, 16 * n
    for name in names:
        dtype, shape, nbytes = layout.rows[name]
        rows[name] = _from_bytes(buf[start:start + nbytes], dtype, shape, device)
        start += nbytes
    return ids, rows, counts


def _cat_rows(parts: list[Tensor], fallback: Tensor) -> Tensor:
    """Concatenate one row name over ranks, ignoring the (any-shaped) empties of ranks without rows."""
    nonempty = [p for p in parts if p.shape[0]]
    return torch.cat(nonempty) if nonempty else fallback
