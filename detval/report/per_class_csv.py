"""per_class.csv: the val.py per-class table as a spreadsheet, exact to the last bit of results.json.

Columns: class, name, images, instances, P, R, mAP50, mAP50-95, and coco_AP when the run has COCO per-class AP
(results["coco"]["per_class_ap"], keyed by class name; blank for a class it lacks). Floats are written with
Python's repr, the shortest text that parses back to the same double, so reading the CSV gives exactly the
numbers in results.json.
"""
from __future__ import annotations

import csv
from pathlib import Path

from detval.atomic_write import write_atomic

COLUMNS = ("class", "name", "images", "instances", "P", "R", "mAP50", "mAP50-95")
COCO_COLUMN = "coco_AP"
_INT_COLUMNS = frozenset({"class", "images", "instances"})


def _coco_per_class_ap(results: dict) -> dict[str, float] | None:
    coco = results.get("coco") or {}
    return coco.get("per_class_ap") or None


def write_per_class_csv(path: Path, results: dict) -> Path:
    """Write one row per class with labels (results["per_class"], id order) to `path`; returns the path."""
    coco_ap = _coco_per_class_ap(results)
    columns = COLUMNS + ((COCO_COLUMN,) if coco_ap else ())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in results["per_class"]:
                values = [row[c] for c in COLUMNS]
                if coco_ap:
                    ap = coco_ap.get(row["name"])
                    values.append("" if ap is None else ap)
                # csv writes floats through repr(): round-trip exact.
                writer.writerow(values)

    write_atomic(path, write)  # whole or absent, as results.json
    return path


def read_per_class_csv(path: Path) -> list[dict]:
    """Read per_class.csv back into results.json-style rows (ints as int, floats as float, blank coco_AP as None)."""
    rows = []
    with Path(path).open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for key, text in raw.items():
                if key == "name":
                    row[key] = text
                elif key in _INT_COLUMNS:
                    row[key] = int(text)
                else:
                    row[key] = None if text == "" else float(text)
            rows.append(row)
    return rows
