"""The raw-output cache (--save-raw DIR): per-batch NMS candidates, labels and image geometry.

What is stored per image is `nms_candidates` at a low threshold (see ops/nms.py for why filtering those to a higher
threshold is bit-identical to a fresh run), so `detval eval --raw DIR` recomputes NMS and every metric at other
--conf-thres (>= the stored one), --iou-thres, --max-det and --single-cls without the model or the images.

Layout: DIR/manifest.json (the key: weights sha256, image list, preprocessing settings, names) and one
DIR/batch_NNNNNN.pt per batch of the batch plan, each written atomically by whichever rank ran it, as soon as it is
done. A run interrupted and started again with the same DIR runs the model only on the batches not yet there.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from detval.errors import DetvalError

STORE_CONF = 0.001  # candidates are kept down to val.py's default threshold
FORMAT = 1


@dataclass(frozen=True)
class RawKey:
    """What the cached outputs depend on. Two runs may share a cache only if their keys are equal."""

    weights_sha256: str
    images_sha256: str  # image paths, file sizes and mtimes, labels, in plan order
    imgsz: int
    batch_size: int  # rect batch shapes depend on it
    task: str
    half: bool
    store_conf: float
    format: int = FORMAT


@dataclass(frozen=True)
class BatchRaw:
    """One batch. image_ids: int64 [B] plan-order indices; cand_counts: int64 [B]; cands: float32 [K, 6]
    (x1, y1, x2, y2, conf, cls) in input pixels; label_counts: int64 [B]; labels: float32 [L, 5] (cls, cx, cy, w, h)
    in input pixels; shapes: per image ((h0, w0), ((gain_h, gain_w), (pad_w, pad_h)))."""

    image_ids: torch.Tensor
    cand_counts: torch.Tensor
    cands: torch.Tensor
    label_counts: torch.Tensor
    labels: torch.Tensor
    shapes: list


def images_digest(records: list) -> str:
    """Hash of the image set as the run sees it: paths, sizes, mtimes and labels, in order."""
    h = hashlib.sha256()
    for r in records:
        st = os.stat(r.path)
        h.update(f"{r.path}|{st.st_size}|{st.st_mtime_ns}|".encode())
        h.update(r.labels.tobytes())
    return h.hexdigest()


class RawCache:
    """A cache folder bound to one RawKey; opening it with another key is refused."""

    def __init__(self, folder: str | Path, key: RawKey, meta: dict | None = None) -> None:
        self.folder = Path(folder)
        self.key = key
        manifest = self.folder / "manifest.json"
        if manifest.is_file():
            stored = json.loads(manifest.read_text())
            diff = {k: (stored["key"].get(k), v) for k, v in asdict(key).items() if stored["key"].get(k) != v}
            if diff:
                what = ", ".join(f"{k}: cached {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise DetvalError(f"{self.folder}: raw-output cache was made for another run ({what}); "
                                  f"use a new --save-raw folder or delete this one")
            self.meta = stored.get("meta", {})
        else:
            if meta is None:
                raise DetvalError(f"{self.folder}: no raw-output cache here (no manifest.json)")
            self.folder.mkdir(parents=True, exist_ok=True)
            self.meta = meta
            _atomic_write_bytes(manifest, json.dumps({"key": asdict(key), "meta": meta}, indent=1).encode())

    @staticmethod
    def open_existing(folder: str | Path) -> "RawCache":
        """Open a cache for re-evaluation, taking its key from its manifest."""
        manifest = Path(folder) / "manifest.json"
        if not manifest.is_file():
            raise DetvalError(f"{folder}: no raw-output cache here (no manifest.json)")
        stored = json.loads(manifest.read_text())
        return RawCache(folder, RawKey(**stored["key"]))

    def _path(self, batch_id: int) -> Path:
        return self.folder / f"batch_{batch_id:06d}.pt"

    def done_batches(self) -> set[int]:
        return {int(p.stem.split("_")[1]) for p in self.folder.glob("batch_*.pt")}

    def write(self, batch_id: int, raw: BatchRaw) -> None:
        tmp = self._path(batch_id).with_suffix(f".tmp{os.getpid()}")
        torch.save(asdict(raw), tmp)
        tmp.replace(self._path(batch_id))

    def read(self, batch_id: int) -> BatchRaw:
        path = self._path(batch_id)
        try:
            return BatchRaw(**torch.load(path, weights_only=True))
        except Exception as e:  # noqa: BLE001 - a torn or foreign file: name it
            raise DetvalError(f"{path}: unreadable raw-output batch ({e}); delete it to recompute") from e


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
