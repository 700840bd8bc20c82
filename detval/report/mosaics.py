"""val_batch{k}_labels.jpg and val_batch{k}_pred.jpg: the first batches' images with their labels and with the
detections (conf > 0.25), as YOLOv5 v7.0 val.py draws them (utils/plots.py plot_images).

Same layout as v7.0: up to 16 letterboxed images of the batch in a square grid filled column by column, the
grid scaled down to at most 1920 px, a white border and the file name on each tile, boxes in v7.0's 20-colour
palette with the class name (labels) or "name conf" (detections, one decimal). Differences: the font is DejaVu
Sans (matplotlib's, always installed) where v7.0 downloads Arial, and the images are read again from disk by
rank 0 at the end (any rank may have run the batch; a re-evaluation of a raw cache has no images in memory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

MAX_SIZE = 1920
MAX_TILES = 16
BATCHES = 3
PRED_CONF = 0.25
MOSAIC_COST = 2.0  # relative to a curve figure (report/plots.py)
PALETTE_HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
               "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")
NAME_COLOR = (220, 220, 220)


def class_color(c: int) -> tuple[int, int, int]:
    h = PALETTE_HEX[int(c) % len(PALETTE_HEX)]
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class Grid:
    """A mosaic of n tiles of (h, w) px: ns x ns tiles, each th x tw px after the scale-down."""

    ns: int
    scale: float
    th: int
    tw: int

    @classmethod
    def of(cls, n: int, h: int, w: int) -> "Grid":
        ns = int(np.ceil(min(n, MAX_TILES) ** 0.5))
        scale = MAX_SIZE / ns / max(h, w)
        if scale < 1:
            return cls(ns, scale, math.ceil(scale * h), math.ceil(scale * w))
        return cls(ns, scale, h, w)

    def origin(self, i: int) -> tuple[int, int]:
        """(x, y) of tile i: column by column, as v7.0."""
        return self.tw * (i // self.ns), self.th * (i % self.ns)

    @property
    def font_size(self) -> int:
        return int((self.th + self.tw) * self.ns * 0.01)


def tile_boxes(xyxy: np.ndarray, grid: Grid, i: int) -> np.ndarray:
    """[n, 4] boxes in letterboxed-image pixels -> mosaic pixels of tile i."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) * min(grid.scale, 1.0)
    x, y = grid.origin(i)
    return boxes + np.array([x, y, x, y], dtype=np.float64)


def build_mosaic(images: list[np.ndarray], grid: Grid) -> np.ndarray:
    """images: HWC RGB uint8 tiles of one shape (the batch's) -> the RGB mosaic, scaled as v7.0 (cv2.resize)."""
    import cv2

    h, w = images[0].shape[:2]
    mosaic = np.full((grid.ns * h, grid.ns * w, 3), 255, dtype=np.uint8)
    for i, im in enumerate(images[:MAX_TILES]):
        x, y = w * (i // grid.ns), h * (i % grid.ns)
        mosaic[y:y + h, x:x + w] = im
    if grid.scale < 1:
        mosaic = cv2.resize(mosaic, (grid.tw * grid.ns, grid.th * grid.ns))
    return mosaic


@dataclass(frozen=True)
class TileMarks:
    """One tile's file name and boxes (letterboxed pixels): cls [n] int, xyxy [n, 4], conf [n] or None (labels)."""

    name: str
    cls: np.ndarray
    xyxy: np.ndarray
    conf: np.ndarray | None


def draw_mosaic(mosaic: np.ndarray, grid: Grid, tiles: list[TileMarks], names: list[str], path: Path) -> None:
    """Borders, file names and boxes on a copy of the mosaic, saved as JPEG (PIL, quality 75 as v7.0)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(mosaic)
    draw = ImageDraw.Draw(im)
    font = _font(grid.font_size)
    lw = round(grid.font_size / 10)
    for i, tile in enumerate(tiles):
        x, y = grid.origin(i)
        draw.rectangle([x, y, x + grid.tw, y + grid.th], None, (255, 255, 255), width=2)
        draw.text((x + 5, y + 5), tile.name[:40], fill=NAME_COLOR, font=font)
        keep = np.ones(len(tile.cls), bool) if tile.conf is None else tile.conf > PRED_CONF
        for j in np.flatnonzero(keep):
            c = int(tile.cls[j])
            label = names[c] if c < len(names) else str(c)
            if tile.conf is not None:
                label = f"{label} {tile.conf[j]:.1f}"
            _box_label(draw, font, tile_boxes(tile.xyxy[j], grid, i)[0].tolist(), label, class_color(c), lw)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _box_label(draw, font, box: list[float], label: str, color: tuple, lw: int) -> None:
    """v7.0 Annotator.box_label (PIL): the box, and the label on a filled strip above it (inside if no room)."""
    draw.rectangle(box, width=lw, outline=color)
    left, top, right, bottom = font.getbbox(label)
    w, h = right, bottom  # what FreeTypeFont.getsize returned
    outside = box[1] - h >= 0
    y0 = box[1] - h if outside else box[1]
    draw.rectangle((box[0], y0, box[0] + w + 1, (box[1] + 1) if outside else (box[1] + h + 1)), fill=color)
    draw.text((box[0], y0), label, fill=(255, 255, 255), font=font)


def _font(size: int):
    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), max(size, 1))


@dataclass(frozen=True)
class MosaicSource:
    """What rank 0 needs to draw the mosaics: dataset (ValDataset: reads and letterboxes an image again),
    batches: plan-order image indices of the first batches, detections: image index -> float32 [N, 6]
    (x1, y1, x2, y2, conf, cls) in original-image pixels."""

    dataset: object
    batches: list[list[int]]
    detections: dict[int, np.ndarray]


def batch_tiles(source: MosaicSource, batch: list[int]) -> tuple[list[np.ndarray], list[TileMarks], list[TileMarks]]:
    """The batch's first 16 images (HWC RGB), their labels and their detections, in letterboxed pixels."""
    images, labels, preds = [], [], []
    for i in batch[:MAX_TILES]:
        img, lb, path, (_, ((gain, _), (padw, padh))), _ = source.dataset[i]
        image = img.numpy().transpose(1, 2, 0)
        h, w = image.shape[:2]
        lb = lb.numpy()
        cx, cy, bw, bh = (lb[:, 2] * w, lb[:, 3] * h, lb[:, 4] * w, lb[:, 5] * h)
        name = Path(path).name
        images.append(image)
        labels.append(TileMarks(name, lb[:, 1].astype(int),
                                np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1), None))
        det = source.detections.get(i, np.zeros((0, 6), np.float32))
        xyxy = det[:, :4] * gain + np.array([padw, padh, padw, padh])
        preds.append(TileMarks(name, det[:, 5].astype(int), xyxy, det[:, 4]))
    return images, labels, preds


def write_batch_mosaics(run_dir: Path, source: MosaicSource, k: int, names: list[str]) -> None:
    """val_batch{k}_labels.jpg and val_batch{k}_pred.jpg for batch k of the source."""
    images, labels, preds = batch_tiles(source, source.batches[k])
    grid = Grid.of(len(images), *images[0].shape[:2])
    mosaic = build_mosaic(images, grid)
    draw_mosaic(mosaic, grid, labels, names, Path(run_dir) / f"val_batch{k}_labels.jpg")
    draw_mosaic(mosaic, grid, preds, names, Path(run_dir) / f"val_batch{k}_pred.jpg")


def mosaic_jobs(run_dir: Path, source: MosaicSource, names: list[str]) -> list[tuple]:
    """(path, cost, draw) per batch, as report/plots.py plot_jobs; path: the labels mosaic."""
    run_dir = Path(run_dir)
    return [(run_dir / f"val_batch{k}_labels.jpg", MOSAIC_COST, partial(write_batch_mosaics, run_dir, source, k, names))
            for k in range(min(BATCHES, len(source.batches)))]
