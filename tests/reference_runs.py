"""Helpers for the tests that hold a detval run against a val.py v7.0 reference in ../shared/data/reference/<case>:
the run (--save-json, no plots), the reference's metrics and predictions, and a coco128 subset for fast runs."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import yaml

from detval.api import validate
from detval.config import ValConfig
from detval.results import ValResult

METRICS = (("P", "p"), ("R", "r"), ("mAP50", "map50"), ("mAP50-95", "map"))


def run_case(data_dir: Path, tmp_path: Path, name: str, weights: list[str], data: str | Path | None = None,
             **kw) -> ValResult:
    """detval val of ../shared/data/weights/<weights> on coco128 (or data) at val.py's defaults, --save-json."""
    cfg = dict(weights=[str(data_dir / "weights" / w) for w in weights],
               data=str(data or data_dir / "coco128" / "coco128.yaml"), device="cpu", workers=0, save_json=True,
               plots=False, quiet=True, project=str(tmp_path), name=name)
    cfg.update(kw)
    return validate(ValConfig(**cfg))


def reference(data_dir: Path, case: str) -> tuple[dict, list[dict]]:
    """(metrics.json, the predictions JSON rows) val.py v7.0 wrote for case."""
    ref = data_dir / "reference" / case
    assert ref.is_dir(), f"missing reference {ref}"
    return json.loads((ref / "metrics.json").read_text()), json.loads(gzip.open(ref / "predictions.json.gz").read())


def predictions(result: ValResult) -> list[dict]:
    """The predictions JSON the run wrote (one per run)."""
    (path,) = Path(result.run_dir).glob("*_predictions.json")
    return json.loads(path.read_text())


def assert_metrics_equal(result: ValResult, metrics: dict, tol: float = 1e-6) -> None:
    for ref_key, ours in METRICS:
        assert abs(getattr(result, ours) - metrics[ref_key]) <= tol, (ref_key, getattr(result, ours), metrics[ref_key])
    maps = metrics["maps_per_class_mAP50-95"]
    assert max(abs(a - b) for a, b in zip(result.maps, maps)) <= tol


def subset_yaml(data_dir: Path, tmp_path: Path, n: int) -> Path:
    """A data.yaml of coco128's first n images (its labels found beside them, as usual)."""
    images = sorted((data_dir / "coco128" / "images" / "train2017").glob("*.jpg"))[:n]
    (tmp_path / "subset.txt").write_text("".join(f"{p}\n" for p in images))
    names = yaml.safe_load((data_dir / "coco128" / "coco128.yaml").read_text())["names"]
    out = tmp_path / "subset.yaml"
    out.write_text(yaml.safe_dump({"path": str(tmp_path), "val": "subset.txt", "names": names}))
    return out


def image_ids(data: Path) -> set[int]:
    return {int(Path(line).stem) for line in (data.parent / "subset.txt").read_text().split()}
