"""What every rank must agree on before batch ids mean the same images everywhere, as one digest."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .plan import BatchPlan


def dataset_relative_paths(paths: list[Path]) -> list[str]:
    """Image paths relative to their common folder (the dataset as one node mounts it), in POSIX form."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    return [Path(p).relative_to(root).as_posix() for p in paths]


def agreement_digest(records: list, plan: BatchPlan) -> str:
    """sha256 of the images (paths relative to the dataset's common folder, so that nodes may mount their copies
    anywhere), their sizes and labels in plan order, and the batch plan. No file times: nodes may hold copies.

    records: ImageRecord-likes (path, shape_hw, labels [n, 5] class, x, y, w, h normalized), in plan order."""
    h = hashlib.sha256()
    for rel, r in zip(dataset_relative_paths([r.path for r in records]), records):
        h.update(f"{rel}|{tuple(r.shape_hw)}|".encode())
        h.update(np.ascontiguousarray(r.labels, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(plan.batch_of, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(plan.batch_shapes, dtype=np.int64).tobytes())
    return h.hexdigest()
