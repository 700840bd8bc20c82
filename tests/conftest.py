from pathlib import Path

import pytest

from detval.paths import shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data (../shared/data or $DETVAL_DATA). Missing data fails the test: CI has it."""
    d = shared_data_dir()
    assert (d / "coco128" / "coco128.yaml").is_file(), f"real test data not found at {d} (set DETVAL_DATA)"
    return d
