"""Image loading and letterboxing with YOLOv5 v7.0's exact resize and padding arithmetic (OpenCV)."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from detval.data.dataset_yaml import DataError
from detval.data.decode import imread_with_messages


def load_image(path: str | Path, img_size: int,
               report: bool = True) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """-> (BGR uint8 [h, w, 3], (h0, w0) original, (h, w) resized to a long side of img_size), as v7.0 load_image.

    INTER_AREA when shrinking, INTER_LINEAR when enlarging; the new size truncates, int(w0 * r): v7.0 (Nov 2022)
    predates YOLOv5's switch to math.ceil (PR #10558, Dec 2022); so a long side of 581 px at 640 becomes
    639 px (581 * (640 / 581) = 639.99...), and letterbox pads the missing pixel.
    Raises DataError naming the file when OpenCV cannot decode it. What its JPEG decoder says is printed on one
    line naming the file, unless report is False (the scan said it already).
    """
    im, said = imread_with_messages(path)
    if said and report:
        print(f"WARNING ⚠️ {path}: {said}", file=sys.stderr)
    if im is None:
        raise DataError(f"{path}: cannot decode image")
    h0, w0 = im.shape[:2]
    h, w = resized_hw((h0, w0), img_size)
    if (h, w) != (h0, w0):
        interp = cv2.INTER_LINEAR if img_size > max(h0, w0) else cv2.INTER_AREA
        im = cv2.resize(im, (w, h), interpolation=interp)
    return im, (h0, w0), im.shape[:2]


def resized_hw(shape_hw: tuple[int, int], img_size: int) -> tuple[int, int]:
    """(height, width) load_image resizes an image of shape_hw to: long side img_size, sizes truncated (v7.0).
    A side can reach 0 (a 4000 x 10 image at 320): such an image cannot be letterboxed (see data/prepare.py)."""
    h0, w0 = shape_hw
    r = img_size / max(h0, w0)
    return (int(h0 * r), int(w0 * r)) if r != 1 else (h0, w0)


def letterbox(im: np.ndarray, new_shape: tuple[int, int], color=(114, 114, 114), auto: bool = False,
              scaleup: bool = False, stride: int = 32) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Fit im (HxWx3 uint8) into new_shape (height, width) keeping its aspect ratio, padding with `color` (v7.0).

    scaleup False never enlarges (val); auto True pads only up to the next multiple of stride (detect.py style).
    Returns (image, (rw, rh) resize ratio, (dw, dh) padding on each side in pixels, possibly halves; the odd pixel
    goes right/bottom by round(d -/+ 0.1)).
    """
    shape = im.shape[:2]
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (r, r), (dw, dh)
