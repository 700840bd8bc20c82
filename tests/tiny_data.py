"""Small copies of coco128 built in a test's tmp folder, for end-to-end fault cases at --imgsz 320: the first n
images linked (never copied: the real files stay untouched), labels copied (a test may edit them), the real yaml."""
from __future__ import annotations

import shutil
from pathlib import Path


def tiny_coco128(data_dir: Path, root: Path, n: int = 4, labels: bool = True) -> Path:
    """root/{images,labels}/train2017 holding coco128's first n images (symlinks) and, if labels, their label
    files; returns root/coco128.yaml (its `path: .` points at this copy)."""
    src = data_dir / "coco128"
    images, label_dir = root / "images" / "train2017", root / "labels" / "train2017"
    images.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for image in sorted((src / "images" / "train2017").glob("*.jpg"))[:n]:
        (images / image.name).symlink_to(image)
        label = src / "labels" / "train2017" / f"{image.stem}.txt"
        if labels and label.is_file():
            shutil.copy(label, label_dir)
    shutil.copy(src / "coco128.yaml", root / "coco128.yaml")
    return root / "coco128.yaml"


def first_image(yaml: Path) -> Path:
    """The tiny copy's first image (a symlink into coco128)."""
    return sorted((yaml.parent / "images" / "train2017").iterdir())[0]


def label_of(image: Path) -> Path:
    return image.parent.parent.parent / "labels" / "train2017" / f"{image.stem}.txt"
