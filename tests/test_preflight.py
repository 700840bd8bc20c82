"""detval.preflight: what a run checks before it loads the model."""
import pytest

from detval.config import ValConfig
from detval.errors import DetvalError
from detval.preflight import check_outputs, check_raw_space, check_writable, nearest_existing


def test_a_folder_to_be_created_is_checked_where_it_would_be_created(tmp_path):
    assert nearest_existing(tmp_path / "a" / "b") == tmp_path
    check_writable(tmp_path / "a" / "b", "--project")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone, nothing was created
    (tmp_path / "file").write_text("x")
    with pytest.raises(DetvalError, match=r"^--project .*/file/runs: .*/file is not a folder$"):
        check_writable(tmp_path / "file" / "runs", "--project")


def test_only_the_folders_a_run_writes_are_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    not_a_folder = str(tmp_path / "file" / "sub")
    cfg = ValConfig(weights="", data="d.yaml", project=not_a_folder, save_raw=not_a_folder)
    check_outputs(cfg, writes_run_folder=False)  # a re-evaluation on a rank that writes no run folder
    with pytest.raises(DetvalError, match="^--project "):
        check_outputs(cfg, writes_run_folder=True)
    with pytest.raises(DetvalError, match="^--save-raw "):
        check_outputs(ValConfig(weights="w.pt", data="d.yaml", save_raw=not_a_folder), writes_run_folder=False)
    with pytest.raises(DetvalError, match="^--cache-dir "):
        check_outputs(ValConfig(weights="w.pt", data="d.yaml", cache="disk", cache_dir=not_a_folder), False)


def test_the_raw_cache_space_is_estimated_from_the_stored_batches(tmp_path):
    check_raw_space(tmp_path, [], 10)  # nothing stored yet: not estimable
    check_raw_space(tmp_path, [1000, 3000], 5)
    with pytest.raises(DetvalError, match=r"--save-raw .*: 3 batches to run need about 3145728\.0 MiB, .* MiB free"):
        check_raw_space(tmp_path, [2**40], 3)
