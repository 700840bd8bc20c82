"""detval.report.run_folder and detval.atomic_write: outputs whole or absent, each failure named, none hiding another."""
import errno

import pytest

from detval.atomic_write import write_atomic, write_bytes_atomic
from detval.report.run_folder import RunFolder, RunIncomplete


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path):
    target = tmp_path / "results.json"
    write_bytes_atomic(target, b"old")

    def half_then_full(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, half_then_full)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"] and target.read_bytes() == b"old"


def test_every_output_is_tried_and_the_missing_ones_named_in_one_line(tmp_path):
    said = []
    folder = RunFolder(tmp_path, say=lambda *a, **k: said.append(a[0]))

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "labels" / "a.txt"))

    assert not folder.attempt("labels/ (--save-txt)", full)
    assert folder.attempt("results.json", lambda: None)
    with pytest.raises(RunIncomplete) as e:
        folder.check_complete("the result", "results.json holds the metrics")
    assert str(e.value) == (f"{tmp_path}: not written: labels/ (--save-txt) (No space left on device: "
                            f"{tmp_path / 'labels' / 'a.txt'}). results.json holds the metrics")
    assert e.value.result == "the result" and len(said) == 1
    with pytest.raises(ZeroDivisionError):  # a bug is not a missing output
        folder.attempt("plots", lambda: 1 / 0)
