"""report/per_class_csv.py: per_class.csv carries results.json's per-class rows exactly."""
import csv
import json

import numpy as np

from detval.report.per_class_csv import read_per_class_csv, write_per_class_csv
from detval.results import ClassResult, ValResult, read_results_json, write_results_json


def _results(coco: bool, seed: int = 0) -> dict:
    """A results.json dict as a run writes it, full-precision floats, awkward names included."""
    rng = np.random.default_rng(seed)
    names = ["person", "bicycle", "hot dog, with mustard", 'the "quoted" one', "car"]
    ids = [0, 2, 3, 4]  # class 1 has no labels
    rows = [ClassResult(c, names[c], int(rng.integers(1, 50)), int(rng.integers(1, 200)),
                        *map(float, rng.random(4))) for c in ids]
    rows[1] = ClassResult(2, names[2], 3, 4, 1 / 3, 0.1 + 0.2, 0.0, 1e-17)  # non-terminating binary fractions
    result = ValResult(images=128, instances=sum(r.instances for r in rows), p=0.6, r=0.5, map50=0.55, map=0.36,
                       maps=[float(x) for x in rng.random(5)], per_class=rows, speed_ms={"inference": 1.0},
                       names=names)
    if coco:
        # COCO per-class AP is keyed by name; 'car' has none.
        result.coco = {"stats": [float(x) for x in rng.random(12)],
                       "per_class_ap": {names[c]: float(rng.random()) for c in ids[:-1]}}
    return result.to_json(settings={"imgsz": 640}, version="0.1.0", weights={"path": "w.pt", "sha256": "x"})


def test_rows_round_trip_exactly_through_results_json(tmp_path):
    results = _results(coco=False)
    write_results_json(tmp_path / "results.json", results)
    loaded = read_results_json(tmp_path)
    path = write_per_class_csv(tmp_path / "per_class.csv", loaded)
    back = read_per_class_csv(path)
    assert back == loaded["per_class"]  # float ==, not approx: repr round-trips
    for row in back:
        assert type(row["class"]) is int and type(row["mAP50"]) is float
    with path.open(newline="") as f:
        assert next(csv.reader(f)) == ["class", "name", "images", "instances", "P", "R", "mAP50", "mAP50-95"]


def test_coco_ap_column_by_class_name(tmp_path):
    results = _results(coco=True)
    back = read_per_class_csv(write_per_class_csv(tmp_path / "per_class.csv", results))
    ap = results["coco"]["per_class_ap"]
    assert [r["coco_AP"] for r in back] == [ap["person"], ap["hot dog, with mustard"], ap['the "quoted" one'],
                                            None]
    assert [{k: v for k, v in r.items() if k != "coco_AP"} for r in back] == results["per_class"]


def test_the_file_is_plain_csv_for_other_tools(tmp_path):
    results = _results(coco=False)
    path = write_per_class_csv(tmp_path / "sub" / "per_class.csv", results)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert rows[1]["name"] == "hot dog, with mustard"
    assert rows[1]["P"] == repr(1 / 3) and rows[1]["R"] == "0.30000000000000004"
    assert json.loads(rows[1]["mAP50-95"]) == 1e-17
