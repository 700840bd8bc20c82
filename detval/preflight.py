"""What a run checks before it loads the model, so that a mistake costs seconds, not a whole run.

The rule, for every run: an error that can be found before inference is found before inference (here, and in
open_inputs: weights, data and labels are read and checked before the first batch); an error after inference never
throws away what was computed (report/run_folder.py: results.json first and atomically, then each other output on
its own, and one line saying what is missing). Here: the folders the run will write into accept a file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from detval.config import ValConfig
from detval.errors import DetvalError


def check_outputs(cfg: ValConfig, writes_run_folder: bool) -> None:
    """Raise DetvalError, one line naming the flag and the folder, unless the run can write where it will:
    --project (by the rank that writes the run folder), --save-raw (by every rank of a model run: each stores
    the batches it runs; a re-evaluation only reads the cache) and the disk image cache."""
    if writes_run_folder:
        check_writable(Path(cfg.project), "--project")
    if cfg.save_raw and cfg.weights:
        check_writable(Path(cfg.save_raw), "--save-raw")
    if cfg.cache == "disk":
        from detval.cache.images import open_image_cache

        check_writable(open_image_cache("disk", cfg.cache_dir).root, "--cache-dir")


def check_raw_space(folder: Path, stored_sizes: list[int], n_todo: int) -> None:
    """Raise DetvalError when the batches still to run will not fit on folder's disk. Estimable only once some
    batches are stored (a resume): their mean size times the batches to run, against the free space."""
    if not stored_sizes or not n_todo:
        return
    need = sum(stored_sizes) / len(stored_sizes) * n_todo
    free = shutil.disk_usage(nearest_existing(folder)).free
    if need > free:
        raise DetvalError(f"--save-raw {folder}: {n_todo} batches to run need about {need / 2**20:.1f} MiB, "
                          f"{free / 2**20:.1f} MiB free; free some space first")


def check_writable(folder: Path, flag: str) -> None:
    """A file can be created in folder or, where it does not exist yet, in the nearest folder above it that does
    (the run creates the rest). Tried for real, with a file created and removed: permission bits do not tell
    about a read-only mount, nor root's rights."""
    base = nearest_existing(folder)
    if not base.is_dir():
        raise DetvalError(f"{flag} {folder}: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".detval-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DetvalError(f"{flag} {folder}: cannot write into {base} ({e.strerror or e}); "
                          f"pass a writable {flag}") from None


def nearest_existing(folder: Path) -> Path:
    """folder itself if it exists, else its nearest existing ancestor (absolute)."""
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
