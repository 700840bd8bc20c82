"""The image cache (--cache ram|disk): decoded, letterboxed images, so repeated runs skip JPEG decoding and resizing.

`ValDataset(records, plan, img_size, image_cache=cache)` calls `cache.get(dataset, i)`, which returns exactly what
`dataset.load_letterboxed(i)` returns: (BGR uint8 [H, W, 3] at the batch shape, (h0, w0), ((h / h0, w / w0),
(dw, dh)), (rw, rh), (h, w)). An entry is keyed by the image file (resolved path, size, mtime) and the settings that
shape its pixels (--imgsz and the image's batch shape, which --batch-size and the rect plan decide): a changed file
or setting is a miss, never a stale hit.

- RamImageCache: a dict in this process. It only helps a process that runs several validations (sweeps, bench);
  DataLoader worker processes fill their own copies, which are lost, so run it with workers=0.
- DiskImageCache: one .npy (pixels, memory-mapped when read) and one .json (geometry) per entry under
  cache_dir/<path digest>/, written atomically (temporary file + rename; the .npy last, so a visible .npy always
  has its .json). Writing a new version of a file's entry removes the entries of its older versions.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when load_letterboxed's output changes for the same file and settings
DEFAULT_CACHE_DIR = Path("~/.cache/detval/images")  # unless --cache-dir, or $DETVAL_CACHE_DIR


@dataclass(frozen=True)
class ImageKey:
    """What one cached image depends on. path: resolved file path; size: bytes; mtime_ns: modification time;
    img_size: --imgsz (long side before letterboxing); shape_hw: the batch's (height, width) input shape."""

    path: str
    size: int
    mtime_ns: int
    img_size: int
    shape_hw: tuple[int, int]

    def file_digest(self) -> str:
        return hashlib.sha256(self.path.encode()).hexdigest()[:24]

    def version_digest(self) -> str:
        """The file's version (size, mtime) only: entries of older versions of a file are stale."""
        return hashlib.sha256(f"{self.size}:{self.mtime_ns}".encode()).hexdigest()[:16]

    def settings_digest(self) -> str:
        h, w = self.shape_hw
        return hashlib.sha256(f"{FORMAT}:{self.img_size}:{h}x{w}".encode()).hexdigest()[:16]


def image_key(dataset, i: int) -> ImageKey:
    """The key of plan-order image i of a ValDataset (stats the file: a cheap call, no read)."""
    path = Path(dataset.records[i].path).resolve()
    st = path.stat()
    shape = tuple(int(v) for v in dataset.plan.batch_shapes[dataset.plan.batch_of[i]])
    return ImageKey(str(path), st.st_size, st.st_mtime_ns, int(dataset.img_size), shape)


def _frozen(item: tuple) -> tuple:
    """A cached item with its pixels read-only: every caller gets the same array, none may change it."""
    img = item[0]
    img.flags.writeable = False
    return (img, *item[1:])


class RamImageCache:
    """Letterboxed images in a dict of this process. hits / misses count get() calls."""

    def __init__(self) -> None:
        self._items: dict[ImageKey, tuple] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, dataset, i: int) -> tuple:
        key = image_key(dataset, i)
        item = self._items.get(key)
        if item is not None:
            self.hits += 1
            return item
        self.misses += 1
        item = _frozen(dataset.load_letterboxed(i))
        self._items[key] = item
        return item

    def clear(self) -> None:
        self._items.clear()


class DiskImageCache:
    """Letterboxed images as files under `root` (default $DETVAL_CACHE_DIR, else ~/.cache/detval/images).
    hits / misses count get() calls in this process."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get("DETVAL_CACHE_DIR") or DEFAULT_CACHE_DIR
        self.root = Path(root).expanduser()
        self.hits = self.misses = 0
        self.write_failed = False  # said once per process

    def entry_paths(self, key: ImageKey) -> tuple[Path, Path]:
        """(pixels .npy, geometry .json) of key's entry."""
        stem = self.root / key.file_digest() / f"{key.version_digest()}-{key.settings_digest()}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def get(self, dataset, i: int) -> tuple:
        key = image_key(dataset, i)
        npy, meta = self.entry_paths(key)
        item = self._read(npy, meta, key)
        if item is not None:
            self.hits += 1
            return item
        self.misses += 1
        item = dataset.load_letterboxed(i)
        try:
            self._write(npy, meta, key, item)
        except OSError as e:  # a full or read-only disk costs the cache, not the run
            if not self.write_failed:
                print(f"WARNING: --cache disk: cannot write into {self.root} ({e.strerror or e}); images not "
                      "cached", file=sys.stderr)
            self.write_failed = True
        return _frozen(item)

    @staticmethod
    def _read(npy: Path, meta: Path, key: ImageKey) -> tuple | None:
        try:
            img = np.load(npy, mmap_mode="r")
            with open(meta, encoding="utf-8") as f:
                m = json.load(f)
        except (OSError, ValueError):  # absent, or damaged by something other than us: a miss, rewritten
            return None
        if m.get("path") != key.path or tuple(img.shape[:2]) != key.shape_hw:
            return None
        (gh, gw), (dw, dh) = m["ratio_pad"]
        return (img, tuple(m["orig_hw"]), ((gh, gw), (dw, dh)), tuple(m["ratio"]), tuple(m["resized_hw"]))

    def _write(self, npy: Path, meta: Path, key: ImageKey, item: tuple) -> None:
        img, orig_hw, ((gh, gw), (dw, dh)), ratio, resized_hw = item
        folder = npy.parent
        folder.mkdir(parents=True, exist_ok=True)
        m = {"path": key.path, "size": key.size, "mtime_ns": key.mtime_ns, "img_size": key.img_size,
             "orig_hw": [int(v) for v in orig_hw], "ratio_pad": [[float(gh), float(gw)], [float(dw), float(dh)]],
             "ratio": [float(v) for v in ratio], "resized_hw": [int(v) for v in resized_hw]}
        _atomic_write(meta, lambda f: f.write(json.dumps(m).encode()))
        _atomic_write(npy, lambda f: np.save(f, np.ascontiguousarray(img)))
        version = key.version_digest()
        for old in folder.iterdir():  # entries of this file's older versions can never hit again
            if not old.name.startswith(version) and not old.name.startswith("."):
                old.unlink(missing_ok=True)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_RAM_CACHE = RamImageCache()


def open_image_cache(kind: str | None, cache_dir: str | Path | None = None) -> RamImageCache | DiskImageCache | None:
    """The cache for --cache kind: None (no cache), 'ram' (this process's shared cache, kept across validate()
    calls) or 'disk' (under cache_dir, default $DETVAL_CACHE_DIR, else ~/.cache/detval/images)."""
    if kind is None:
        return None
    if kind == "ram":
        return _RAM_CACHE
    if kind == "disk":
        return DiskImageCache(cache_dir)
    raise ValueError(f"--cache must be ram or disk, got {kind}")
