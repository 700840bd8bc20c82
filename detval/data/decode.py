"""Decoding an image file with OpenCV, with the file named in what its JPEG decoder says.

libjpeg writes its warnings ("Premature end of JPEG file", "Corrupt JPEG data: N extraneous bytes ...") straight to
the process's stderr, without the file's name; among thousands of images that line tells nothing. Here the
decoder's output is caught for the duration of the call and handed back, so that the caller can say it once,
with the file.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

_LOCK = threading.Lock()  # file descriptor 2 is the process's: one capture at a time


def imread_with_messages(path: str | Path) -> tuple[np.ndarray | None, str]:
    """cv2.imread(path) -> (BGR uint8 image or None, what the decoder wrote to stderr meanwhile, stripped).

    Anything another thread writes to stderr during the call is caught too, and so handed back, never lost."""
    with _LOCK, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            image = cv2.imread(str(path))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        text = caught.read().decode(errors="replace").strip()
    return image, " ".join(text.split("\n"))
