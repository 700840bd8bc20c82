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
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from detval.atomic_write import write_atomic, write_bytes_atomic
from detval.data.plan import BatchPlan
from detval.data.prepare import Prepared
from detval.data.scan import ImageRecord
from detval.errors import DetvalError
from detval.results import Excluded

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
    runtime: str = "PyTorch"  # onnxruntime and OpenCV DNN give other digits from the same file
    augment: bool = False  # test-time augmentation (a manifest written before it existed: False, which it was)


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
            stored = _read_manifest(manifest)
            cached = asdict(RawKey(**stored["key"]))  # fields an older manifest lacks take their defaults
            diff = {k: (cached[k], v) for k, v in asdict(key).items() if cached[k] != v}
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
            write_bytes_atomic(manifest, json.dumps({"key": asdict(key), "meta": meta}, indent=1).encode())

    @classmethod
    def for_run(cls, folder: str | Path, weights_sha256: str, prep: Prepared, settings: "RunSettings",
                batch_size: int, task: str, half: bool, conf_thres: float, runtime: str = "PyTorch",
                augment: bool = False) -> "RawCache":
        """The cache of a model run: opened if it was made for the same run (resume), else created with a
        manifest that records the dataset side (read back by `prepared`)."""
        key = RawKey(weights_sha256=weights_sha256, images_sha256=images_digest(prep.records), imgsz=prep.imgsz,
                     batch_size=batch_size, task=task, half=half, store_conf=min(conf_thres, STORE_CONF),
                     runtime=runtime, augment=augment)
        return cls(folder, key, {**asdict(settings), **_dataset_meta(prep)})

    def prepared(self, single_cls: bool = False) -> Prepared:
        """The dataset side of the run that filled the cache, as its manifest recorded it (no image is read;
        records carry no labels: the cached batches hold them)."""
        m = self.meta
        records = [ImageRecord(Path(p), tuple(hw), np.zeros((0, 5), np.float32))
                   for p, hw in zip(m["images"], m["shapes_hw"])]
        plan = BatchPlan(np.arange(len(records)), np.array(m["batch_of"]), np.array(m["batch_shapes"]))
        excluded = [Excluded(f, r) for f, r in m["excluded"]]
        return Prepared(records, excluded, m["names"], plan, m["imgsz"], m["scan_summary"], single_cls)

    @property
    def settings(self) -> "RunSettings":
        """What the run that filled the cache was run on."""
        m = self.meta
        return RunSettings(weights=m.get("weights", ""), data=m.get("data", ""), images_dir=m.get("images_dir"),
                           device=m.get("device", ""))

    @staticmethod
    def open_existing(folder: str | Path) -> "RawCache":
        """Open a cache for re-evaluation, taking its key from its manifest."""
        manifest = Path(folder) / "manifest.json"
        if not manifest.is_file():
            raise DetvalError(f"{folder}: no raw-output cache here (no manifest.json)")
        return RawCache(folder, RawKey(**_read_manifest(manifest)["key"]))

    def _path(self, batch_id: int) -> Path:
        return self.folder / f"batch_{batch_id:06d}.pt"

    def done_batches(self) -> set[int]:
        """The batches stored whole. A file cut short (a full disk, a copy that stopped) is left out, so a model
        run recomputes it, with a warning naming it (see unreadable_batches)."""
        return {_batch_id(p) for p in self.folder.glob("batch_*.pt")} - set(self.unreadable_batches())

    def stored_sizes(self, batch_ids) -> list[int]:
        """File sizes in bytes of the given stored batches (the disk space a batch takes)."""
        return [self._path(b).stat().st_size for b in batch_ids]

    def unreadable_batches(self) -> dict[int, str]:
        """{batch id: "FILE: why"} of the stored batch files that are not whole torch archives. Cheap: each file's
        zip directory is read, not its tensors."""
        found = {p: _archive_problem(p) for p in sorted(self.folder.glob("batch_*.pt"))}
        return {_batch_id(p): f"{p}: unreadable raw-output batch ({why})" for p, why in found.items() if why}

    def write(self, batch_id: int, raw: BatchRaw) -> None:
        """Store one batch, whole or not at all; a full disk stops the run with the batches stored so far kept."""
        path = self._path(batch_id)
        try:
            write_atomic(path, lambda tmp: torch.save(asdict(raw), tmp))
        except OSError as e:
            raise DetvalError(f"{path}: cannot write raw-output batch ({e.strerror or e}); the batches already in "
                              f"{self.folder} are kept: free space and run the same command to resume") from None

    def read(self, batch_id: int) -> BatchRaw:
        path = self._path(batch_id)
        try:
            return BatchRaw(**torch.load(path, weights_only=True))
        except Exception as e:  # noqa: BLE001 - a torn or foreign file: name it
            raise DetvalError(f"{path}: unreadable raw-output batch ({e}); delete it to recompute") from e


@dataclass(frozen=True)
class RunSettings:
    """The settings of the model run that a manifest records beside its key (a re-evaluation reports them)."""

    weights: str | list[str]  # an ensemble's files as a list
    data: str
    images_dir: str | None
    device: str


def _dataset_meta(prep: Prepared) -> dict:
    return {"names": list(prep.names), "nc": prep.nc, "imgsz": prep.imgsz, "scan_summary": prep.scan_summary,
            "images": [str(r.path) for r in prep.records], "shapes_hw": [list(r.shape_hw) for r in prep.records],
            "batch_shapes": prep.plan.batch_shapes.tolist(), "batch_of": prep.plan.batch_of.tolist(),
            "excluded": [[e.file, e.reason] for e in prep.excluded]}


def _read_manifest(manifest: Path) -> dict:
    """The manifest as written; a cut or edited one is named, with what to do (its batches cannot be trusted
    without the key that says what they were computed from)."""
    try:
        stored = json.loads(manifest.read_text())
        if isinstance(stored, dict) and isinstance(stored.get("key"), dict):
            RawKey(**stored["key"])
            return stored
        problem = "no 'key' record"
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        problem = f"{type(e).__name__}: {e}"
    raise DetvalError(f"{manifest}: unreadable raw-output cache manifest, truncated? ({problem}); delete "
                      f"{manifest.parent} (or pass another --save-raw folder) and run detval val --save-raw again")


def _batch_id(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _archive_problem(path: Path) -> str:
    """'' when path is a whole torch zip archive (its directory readable, every member inside the file), else why."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            if any(i.header_offset + i.compress_size > size for i in z.infolist()):
                return "a member extends past the end of the file"
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{type(e).__name__}: {e}"
    return ""
