"""Equality of large values (a run's predictions, its files) reported in one short line.

`assert big == other` in a test module makes pytest explain a failure with a full diff of the two values, and on CI
(where $CI is set) it always does: for two lists of 30,000 predictions that diff ran for over an hour, past CI's
time limit. These helpers compare, then name the first difference.
"""
from __future__ import annotations

from typing import Any

_SHOWN = 160  # characters of a value shown


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def first_difference(got: Any, expected: Any) -> str:
    """Where got and expected first differ, in words (got == expected: '')."""
    if got == expected:
        return ""
    if isinstance(got, dict) and isinstance(expected, dict):
        missing, extra = sorted(map(str, expected.keys() - got.keys())), sorted(map(str, got.keys() - expected.keys()))
        if missing or extra:
            return f"keys missing {_short(missing)}, unexpected {_short(extra)}"
        key = next(k for k in expected if got[k] != expected[k])
        return f"[{key!r}]: {first_difference(got[key], expected[key])}"
    text = isinstance(got, (str, bytes)) and isinstance(expected, type(got))
    if text:
        got, expected = got.splitlines(), expected.splitlines()
        if got == expected:
            return "line endings differ"
    if isinstance(got, (list, tuple)) and isinstance(expected, type(got)):
        i = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        where = f"{len(got)} {'lines' if text else 'items'}, {len(expected)} expected; first difference at [{i}]"
        if i < min(len(got), len(expected)):
            detail = _got_expected(got[i], expected[i]) if text else first_difference(got[i], expected[i])
            return f"{where}: {detail}"
        return where
    return _got_expected(got, expected)


def _got_expected(got: Any, expected: Any) -> str:
    return f"got {_short(got)}, expected {_short(expected)}"


def assert_equal(got: Any, expected: Any, what: str) -> None:
    """got == expected, or an AssertionError naming what and where they first differ."""
    difference = first_difference(got, expected)
    if difference:
        raise AssertionError(f"{what}: {difference}")
