"""Helpers for the tests that hold a detval run against a val.py v7.0 reference run of a case (reference_dir: this
CPU kind's): the run (--save-json, no plots), the reference's metrics and predictions, and a coco128 subset for
fast runs."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import yaml

from detval.api import validate
from detval.config import ValConfig
from detval.results import ValResult
from reference_predictions import reference_dir

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
    ref = reference_dir(data_dir, case)
    assert ref.is_dir(), f"missing reference {ref}"
    return json.loads((ref / "metrics.json").read_text()), json.loads(gzip.open(ref / "predictions.json.gz").read())


def predictions(result: ValResult) -> list[dict]:
    """The predictions JSON the run wrote (one per run)."""
    (path,) = Path(result.run_dir).glob("*_predictions.json")
    return json.loads(path.read_text())


def assert_metrics_equal(result: ValResult, metrics: dict, tol: float = 1e-6, class_tol: float | None = None) -> None:
    """P, R, mAP50, mAP50-95 within tol of val.py's, every class's mAP50-95 within class_tol (default tol)."""
    for ref_key, ours in METRICS:
        assert abs(getattr(result, ours) - metrics[ref_key]) <= tol, (ref_key, getattr(result, ours), metrics[ref_key])
    maps = metrics["maps_per_class_mAP50-95"]
    assert max(abs(a - b) for a, b in zip(result.maps, maps)) <= (tol if class_tol is None else class_tol)


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


def dropped_by_time_limit(result: ValResult, preds: list[dict], raw_dir: Path) -> set[int]:
    """The images val.py's NMS time limit emptied in the reference (detval has none: README, Exactness): those with
    detections here and none there. Asserts they are batch tails, as the limit leaves them (it stops a batch's
    image loop), and returns their stems."""
    from detval.cache.raw_outputs import RawCache

    ours = {p["image_id"] for p in predictions(result)}
    dropped = ours - {p["image_id"] for p in preds}
    cache = RawCache.open_existing(raw_dir)
    stems = [int(Path(p).stem) for p in cache.meta["images"]]
    for b in range(len(cache.meta["batch_shapes"])):
        flags = [stems[i] in dropped for i, batch in enumerate(cache.meta["batch_of"]) if batch == b]
        assert flags == sorted(flags), f"batch {b}: dropped images are not the batch's tail"
    return dropped


def empty_images_in_raw_cache(raw_dir: Path, stems: set[int]) -> None:
    """Rewrite a raw cache with no NMS candidates for the given images (to replay val.py's time-limited run)."""
    import torch

    from detval.cache.raw_outputs import BatchRaw, RawCache

    cache = RawCache.open_existing(raw_dir)
    images = cache.meta["images"]
    for b in sorted(cache.done_batches()):
        raw = cache.read(b)
        parts = torch.split(raw.cands, raw.cand_counts.tolist())
        keep = [int(Path(images[i]).stem) not in stems for i in raw.image_ids.tolist()]
        kept = [p if k else p[:0] for p, k in zip(parts, keep)]
        cache.write(b, BatchRaw(raw.image_ids, torch.tensor([len(p) for p in kept], dtype=torch.int64),
                                torch.cat(kept), raw.label_counts, raw.labels, raw.shapes))
