"""YOLOv5 data.yaml: where the images of each split are, and the class names.

`path` (the dataset root) is resolved against the yaml's own folder when relative. YOLOv5 itself resolves a relative
`path` against its repository root (e.g. `../datasets/coco128`), so a YOLOv5 yaml that relies on that needs an
absolute `path`, or must be placed so that the path holds from the yaml's folder.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from detval.errors import DetvalError

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")  # as YOLOv5 v7.0


class DataError(DetvalError):
    """A dataset that cannot be used: a missing file or split, inconsistent names, nothing left to validate."""


@dataclass(frozen=True)
class DataConfig:
    """A parsed data.yaml. Each split is a list of folders and/or image-list files, or None when absent."""

    yaml_path: Path
    root: Path
    train: list[Path] | None
    val: list[Path] | None
    test: list[Path] | None
    names: list[str]

    @property
    def nc(self) -> int:
        return len(self.names)


def load_data_config(path: str | Path) -> DataConfig:
    """Parse a data.yaml: `path` (root; relative = from the yaml's folder), `train`/`val`/`test` (each a folder, a
    .txt image list, or a list of these, relative to the root), `names` (list or {id: name}), optional `nc`.

    Raises DataError naming the file when it is missing or not YAML, or names/nc are absent or disagree.
    Splits are not checked for existence here (list_images does, when one is used).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data yaml not found")
    try:
        d = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a mapping with train/val/names")
    root = Path(d.get("path") or ".")
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    names = d.get("names")
    if isinstance(names, dict):
        keys = list(names)
        # YOLOv5 indexes names[cls], so the ids must be exactly 0..n-1
        if not all(type(k) is int for k in keys) or sorted(keys) != list(range(len(keys))):
            raise DataError(f"{path}: names keys must be the integers 0..{len(keys) - 1}, got {keys[:5]}...")
        names = [str(names[k]) for k in range(len(keys))]
    elif isinstance(names, (list, tuple)):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{path}: 'names' missing (a list or a dict of class names)")
    if d.get("nc") is not None and d["nc"] != len(names):
        raise DataError(f"{path}: nc {d['nc']} but {len(names)} names")

    def split(key: str) -> list[Path] | None:
        v = d.get(key)
        if not v:
            return None
        items = v if isinstance(v, list) else [v]
        # resolved as v7.0's check_dataset does: the strings (symlinks, '..') decide the sorted image order
        return [(root / str(x)).resolve() for x in items]

    return DataConfig(path, root, split("train"), split("val"), split("test"), names)


def list_images(sources: list[Path]) -> list[Path]:
    """Image files of a split, in YOLOv5 v7.0 order.

    A folder gives every file below it (recursive glob `**/*.*`); a list file gives its lines, where a line that
    starts with './' is relative to the list file's folder and any other relative line stays relative to the current
    directory, as in v7.0. (v7.0 replaces every './' of such a line, which breaks './../x' lines into a path that
    does not exist; detval replaces the leading one only.) Files whose text after the last '.' is in
    IMG_FORMATS (any case) are kept and sorted as strings; repeats are dropped (v7.0's label cache is keyed by path).
    Raises DataError for a source that does not exist or when no image is found.
    """
    files: list[str] = []
    for p in map(Path, sources):
        if p.is_dir():
            files += glob.glob(str(p / "**" / "*.*"), recursive=True)
        elif p.is_file():
            parent = str(p.parent) + os.sep
            lines = p.read_text().strip().splitlines()
            files += [x.replace("./", parent, 1) if x.startswith("./") else x for x in lines]
        else:
            raise DataError(f"{p}: does not exist")
    images = sorted(x.replace("/", os.sep) for x in files if x.split(".")[-1].lower() in IMG_FORMATS)
    if not images:
        raise DataError(f"no images found in {', '.join(str(s) for s in sources)}")
    return [Path(x) for x in dict.fromkeys(images)]


def label_path_for(image: Path) -> Path:
    """YOLOv5's img2label_paths: the last /images/ becomes /labels/, the suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")
