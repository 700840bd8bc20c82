"""Comparing a run's files with val.py v7.0's reference files for this CPU kind (`reference_dir`).

val.py's own digits depend on the CPU's instruction set (README, Exactness): ../shared/data/reference/<case>/ holds
one CPU's runs; tests/references/<kind>/<case>/ holds val.py's runs of the same cases recorded on another kind
(benchmarks/record_references.py) and is used where it exists.

Even on one kind, the reference may have run on another CPU model, whose convolutions round a little differently:
its boxes differed from a later machine's by up to ~2.3e-3 px and its scores by ~3e-6 (tests/test_model.py measures
it on raw outputs; YOLOv5 v7.0's own code run there gave detval's bits exactly). So a detection matches when its
category is the same, its score is within 2e-5 (5-decimal rounding plus that) and every bbox number within 5e-3 px
(3-decimal rounding of x and w plus that); every row of an image must match one row of the other file.
"""
from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from detval.config import ValConfig

RECORDED = Path(__file__).parent / "references"

BOX_TOL = 5e-3  # px
SCORE_TOL = 2e-5


def reference_dir(data_dir: Path, case: str) -> Path:
    """val.py's run of case: tests/references/<this CPU kind>/<case> where one was recorded, else the shared one."""
    recorded = RECORDED / torch.backends.cpu.get_cpu_capability().lower() / case
    return recorded if recorded.is_dir() else data_dir / "reference" / case


def printed_rows(case_dir: Path, *classes: str) -> list[str]:
    """The rows val.py printed for these classes ('all' for the summary), as printed."""
    lines = (case_dir / "val_stdout.log").read_text().splitlines()
    rows = [next((line for line in lines if line.split()[:1] == [c]), None) for c in classes]
    assert None not in rows, f"{case_dir / 'val_stdout.log'} has no row for one of {classes}"
    return rows


def by_image(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        out[r["image_id"]].append(r)
    return out


def reference_json(case_dir: Path) -> dict[int, list[dict]]:
    """The reference predictions.json.gz, rows by image id."""
    with gzip.open(case_dir / "predictions.json.gz", "rt") as f:
        return by_image(json.load(f))


def unmatched_rows(expected: list[dict], got: list[dict]) -> list[dict]:
    """The rows of expected that find no distinct row of got within the tolerances (greedy, closest first)."""
    free = list(got)
    missing = []
    for e in expected:
        close = [(max(abs(a - b) for a, b in zip(e["bbox"], g["bbox"])), k) for k, g in enumerate(free)
                 if g["category_id"] == e["category_id"] and abs(g["score"] - e["score"]) <= SCORE_TOL]
        close = [(d, k) for d, k in close if d <= BOX_TOL]
        if close:
            free.pop(min(close)[1])
        else:
            missing.append(e)
    return missing


def assert_predictions_match(expected: dict[int, list[dict]], got: dict[int, list[dict]]) -> None:
    """Every image has as many detections in both, and each detection matches (see the module docstring)."""
    assert sorted(k for k in expected if expected[k]) == sorted(k for k in got if got[k])
    for image_id, rows in expected.items():
        assert len(got[image_id]) == len(rows), image_id
        assert unmatched_rows(rows, got[image_id]) == [], image_id


def assert_txt_match(expected_dir: Path, got_dir: Path, tol: float = 1e-5) -> None:
    """--save-txt folders: the same files, the same rows per file, each expected row within tol of a got row of
    its class (values are normalized, 6 significant digits)."""
    names = sorted(p.name for p in expected_dir.glob("*.txt"))
    assert names == sorted(p.name for p in got_dir.glob("*.txt"))
    for name in names:
        expected, got = np.loadtxt(expected_dir / name, ndmin=2), np.loadtxt(got_dir / name, ndmin=2)
        assert got.shape == expected.shape, name
        for row in expected:
            same_cls = got[got[:, 0] == row[0]]
            assert np.abs(same_cls[:, 1:] - row[1:]).max(1).min() < tol, name


def reference_cfg(data_dir: Path, root: Path, name: str, **kw) -> ValConfig:
    """yolov5n on coco128 at val.py's defaults (the reference runs' settings) on the CPU, --save-json, quiet, no
    plots, into root/name; kw: other ValConfig fields."""
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(data_dir / "coco128" / "coco128.yaml"),
                device="cpu", save_json=True, plots=False, quiet=True, project=str(root), name=name, exist_ok=True)
    return ValConfig(**{**base, **kw})
