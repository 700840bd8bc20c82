"""The run folder's outputs, written most valuable first, each on its own: results.json (the metrics, atomically)
before the --save-txt files, the COCO step and the plots. An output that fails (a full disk, a folder gone
read-only) leaves the others in place and is named; once all were tried, one error says what is missing and what
is kept. A bug (any other exception) still propagates, with results.json already written."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from detval.errors import DetvalError


class RunIncomplete(DetvalError):
    """The run computed its metrics but some outputs could not be written. result: the ValResult (the Python
    API's caller keeps it; the CLI prints the one line)."""

    def __init__(self, message: str, result) -> None:
        super().__init__(message)
        self.result = result


class RunFolder:
    """Tries each output, remembering what failed. say: where warnings go (rank 0's print)."""

    def __init__(self, run_dir: Path, say: Callable[..., None] = print) -> None:
        self.run_dir = Path(run_dir)
        self.say = say
        self.missing: list[str] = []

    def attempt(self, what: str, write: Callable[[], object]) -> bool:
        """Run write(); on an OSError (or a DetvalError) note `what` as missing, warn, and return False."""
        try:
            write()
            return True
        except (OSError, DetvalError) as e:
            why = _reason(e)
            self.missing.append(f"{what} ({why})")
            self.say(f"WARNING: {what} not written: {why}", file=sys.stderr)
            return False

    def check_complete(self, result, kept: str) -> None:
        """Raise RunIncomplete, one line naming what is missing and what is kept, if any output failed."""
        if self.missing:
            raise RunIncomplete(f"{self.run_dir}: not written: {'; '.join(self.missing)}. {kept}", result)


def _reason(e: Exception) -> str:
    """'No space left on device' (with the file, when the OSError names one) rather than '[Errno 28] ...'."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return str(e)
