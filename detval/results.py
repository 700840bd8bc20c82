"""Typed validation results and their results.json form.

results.json layout (a stable contract: `detval compare`, plots and tests read it):
{
  "detval_version": str,
  "weights": {"path": str, "sha256": str},
  "settings": {...ValConfig fields...},
  "images": int, "instances": int,
  "metrics": {"P": float, "R": float, "mAP50": float, "mAP50-95": float},
  "maps": [float] * nc,                 # val.py's per-class mAP50-95 (classes without labels hold the overall value)
  "per_class": [{"class": int, "name": str, "images": int, "instances": int,
                 "P": float, "R": float, "mAP50": float, "mAP50-95": float}],   # classes with labels, id order
  "speed_ms_per_image": {"preprocess": float, "inference": float, "nms": float},
  "excluded": [{"file": str, "reason": str}],
  "coco": null | {"stats": [12 floats], "per_class_ap": {"<class name>": float}},
  "distributed": {"world_size": int, "wall_s": float, "images_per_s": float, "busy_share": float,
                  "ranks": [{"rank", "images", "batches", "busy_s", "images_per_s"}], ...},  # dist/summary.py
  "wall_seconds": float
}
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from detval.atomic_write import write_bytes_atomic
from detval.errors import DetvalError


@dataclass(frozen=True)
class ClassResult:
    """One row of the val.py table."""

    class_id: int
    name: str
    images: int
    instances: int
    p: float
    r: float
    map50: float
    map: float  # mAP50-95


@dataclass(frozen=True)
class Excluded:
    """An input file left out of the run, and why."""

    file: str
    reason: str


@dataclass
class ValResult:
    """Everything one validation run computed. Floats are full precision."""

    images: int
    instances: int
    p: float
    r: float
    map50: float
    map: float
    maps: list[float]
    per_class: list[ClassResult]
    speed_ms: dict[str, float]
    names: list[str]
    excluded: list[Excluded] = field(default_factory=list)
    coco: dict | None = None
    distributed: dict | None = None
    run_dir: Path | None = None
    wall_seconds: float = 0.0

    @property
    def metrics(self) -> dict[str, float]:
        return {"P": self.p, "R": self.r, "mAP50": self.map50, "mAP50-95": self.map}

    def to_json(self, settings: dict, version: str, weights: dict) -> dict:
        return {
            "detval_version": version,
            "weights": weights,
            "settings": settings,
            "images": self.images,
            "instances": self.instances,
            "metrics": self.metrics,
            "maps": list(self.maps),
            "per_class": [
                {"class": c.class_id, "name": c.name, "images": c.images, "instances": c.instances,
                 "P": c.p, "R": c.r, "mAP50": c.map50, "mAP50-95": c.map}
                for c in self.per_class
            ],
            "speed_ms_per_image": dict(self.speed_ms),
            "excluded": [asdict(e) for e in self.excluded],
            "coco": self.coco,
            "distributed": self.distributed,
            "wall_seconds": self.wall_seconds,
        }


def write_results_json(path: Path, data: dict) -> None:
    """Write atomically so that an interrupted run or a full disk never leaves half a file."""
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())


def read_results_json(run_dir: Path) -> dict:
    """Load results.json from a run folder (or the file itself)."""
    p = Path(run_dir)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"no results.json at {p} (is it a detval run folder?)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DetvalError(f"{p}: results.json is not valid JSON ({e})") from None
