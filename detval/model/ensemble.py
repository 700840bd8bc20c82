"""Several checkpoints as one detector, as YOLOv5 v7.0's Ensemble (models/experimental.py) runs them for
`val.py --weights a.pt b.pt`: every model's output joined along the box axis, one NMS over all of them."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from detval.model.build import LoadedModel
from detval.model.errors import CheckpointError


class Ensemble(nn.Module):
    """forward(x [B, 3, H, W]) -> [B, N_1 + ... + N_k, 5 + nc]: each member's output, in --weights order."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """The members' outputs joined along the box axis (each with test-time augmentation when augment)."""
        return torch.cat([m(x, augment=augment) for m in self.models], 1)

    @property
    def chunk_pixels(self) -> int | None:
        """The members' chunked CPU forward (DetectionModel.chunk_pixels), set on all of them."""
        return self.models[0].chunk_pixels

    @chunk_pixels.setter
    def chunk_pixels(self, value: int | None) -> None:
        for m in self.models:
            m.chunk_pixels = value

    def use_channels_last(self) -> "Ensemble":
        for m in self.models:
            m.use_channels_last()
        return self


def ensemble_of(members: list[LoadedModel]) -> LoadedModel:
    """One LoadedModel of several, as v7.0's attempt_load builds it: names and nc of the first (every member must
    have its nc), the strides of the member with the largest stride (the first such)."""
    first = members[0]
    if any(m.nc != first.nc for m in members):
        raise CheckpointError(f"{first.path}: the ensemble's models have different class counts: "
                              f"{[m.nc for m in members]}")
    widest = max(members, key=lambda m: float(m.stride.max()))
    digest = hashlib.sha256("\n".join(m.sha256 for m in members).encode()).hexdigest()
    return LoadedModel(model=Ensemble([m.model for m in members]), names=first.names, nc=first.nc,
                       stride=widest.stride.clone(), sha256=digest, path=first.path,
                       fused=all(m.fused for m in members))
