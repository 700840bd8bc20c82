"""Where the bundled real data lives (overridable for CI and other machines)."""
import os
from pathlib import Path

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The real-data folder: $DETVAL_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("DETVAL_DATA", _DEFAULT))
