"""The tests' equality helper names the first difference in one line, for lists of dicts, dicts and file texts."""
import pytest

from short_diff import assert_equal, first_difference


def test_the_first_differing_row_and_field_are_named():
    rows = [{"image_id": i, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5} for i in range(30000)]
    other = [dict(r) for r in rows]
    other[17] = dict(other[17], bbox=[1.0, 2.0, 3.5, 4.0])
    assert first_difference(rows, rows) == ""
    assert first_difference(other, rows) == ("30000 items, 30000 expected; first difference at [17]: ['bbox']: "
                                             "4 items, 4 expected; first difference at [2]: got 3.5, expected 3.0")
    assert first_difference(rows[:5], rows[:7]) == "5 items, 7 expected; first difference at [5]"
    with pytest.raises(AssertionError, match=r"^predictions: 30000 items"):
        assert_equal(other, rows, "predictions")


def test_keys_texts_and_bytes():
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == "keys missing ['b'], unexpected []"
    assert first_difference({"a.txt": "x\ny\n"}, {"a.txt": "x\nz\n"}) == \
        "['a.txt']: 2 lines, 2 expected; first difference at [1]: got 'y', expected 'z'"
    assert first_difference(b"x\r\n", b"x\n") == "line endings differ"
    assert first_difference(1, "1") == "got 1, expected '1'"
    assert len(first_difference("a" * 1000, "b" * 1000)) < 400
    assert_equal({"a": [1, 2]}, {"a": [1, 2]}, "same")
