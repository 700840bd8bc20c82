"""Writing a file so that it is either whole or absent: a temporary file beside it, renamed over it when complete.
A failure (a full disk, Ctrl-C) removes the temporary file, so no partial file is ever left behind."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) fills a temporary file beside path, which then replaces path in one rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))
