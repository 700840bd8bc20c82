"""What an evaluator may ask of the other ranks, without knowing ranks or backends (detectron2's `comm`).

Every method is collective (every rank calls it, in the same order) and works unchanged in a single process, where
it only sorts or wraps. Per-image data travels as ragged tables (see gather.py): image i owns counts[i] rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from detval.distributed.context import DistContext
from detval.distributed.gather import Ragged, exchange_ragged, gather_objects, gather_ragged, sort_by_image

Tables = dict[str, tuple[dict[str, Tensor], Tensor]]
"""Several ragged tables over the same images: {table name: (rows {column: Tensor[n_rows, ...]}, counts [n])}."""


@dataclass(frozen=True)
class Comm:
    """The run's process group as the evaluators see it."""

    ctx: DistContext

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    @property
    def n_shares(self) -> int:
        """How many shares work split by something other than the image (a category) should have: one per rank."""
        return self.ctx.world_size

    def gather_images(self, image_ids: Tensor, tables: Tables) -> tuple[Tensor, Tables] | None:
        """Every rank's per-image tables on rank 0, images in ascending id (the batch plan's order); None on the
        other ranks. image_ids: int64 [n] this rank's images, distinct over all ranks."""
        out: Tables = {}
        ids = None
        for name, (rows, counts) in tables.items():
            got = (gather_ragged(self.ctx, image_ids, rows, counts) if self.ctx.is_distributed
                   else sort_by_image(image_ids, rows, counts))
            if got is not None:
                ids, out[name] = got[0], (got[1], got[2])
        return (ids, out) if self.is_main else None

    def exchange(self, shares: list[Ragged]) -> Ragged:
        """All-to-all: shares[k] (ragged, keyed by image) goes to share owner k; returns what every rank sent to
        this one, sorted by image. len(shares) == n_shares."""
        if not self.ctx.is_distributed:
            return sort_by_image(*shares[0])
        return exchange_ragged(self.ctx, shares)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's small picklable obj, by rank, on rank 0; None elsewhere."""
        return gather_objects(self.ctx, obj)
