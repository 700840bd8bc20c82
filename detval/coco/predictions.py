"""Detections as val.py's save_one_json numbers them: the rows of the predictions JSON, rounded once (on the
rank that owns the image; rank 0 writes the gathered rows as they are), and the file itself."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detval.coco.format import coco_boxes_and_scores
from detval.coco.ground_truth import CocoGt
from detval.coco.json_columns import write_results


@dataclass(frozen=True, eq=False)
class CocoRows:
    """Detections as the predictions JSON holds them, one row per detection in the given image order.

    record [D] int64 (index into the run's records); category [D] int64; boxes [D, 4] float64 xywh pixels
    rounded to 3 decimals; scores [D] float64 rounded to 5: the floats json.load reads back from the file."""

    record: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def coco_rows(class_map: list[int], record: np.ndarray, boxes_xyxy: np.ndarray, conf: np.ndarray,
              cls: np.ndarray) -> CocoRows:
    """Detections (record [D] int64 record index of each row; boxes_xyxy float32 [D, 4] native pixels; conf, cls
    float32 [D]) as val.py's save_one_json numbers them; class_map[c]: category id of class c."""
    boxes, scores = coco_boxes_and_scores(boxes_xyxy, conf)
    return CocoRows(record, np.asarray(class_map, dtype=np.int64)[cls.astype(np.int64)], boxes, scores)


def write_predictions_json(path: str | Path, gt: CocoGt, rows: CocoRows, workers: int = 1) -> None:
    """The file val.py writes (json.dump of predictions_json(gt, rows): the same bytes), formatted from the
    columns without a dict per detection, in `workers` forked processes."""
    write_results(path, [json.dumps(i) for i in gt.record_ids], rows.record, rows.category, rows.boxes, rows.scores,
                  workers)


def predictions_json(gt: CocoGt, rows: CocoRows) -> list[dict]:
    """The results list val.py writes (same keys, key order and numbers), rows in the given order."""
    ids = gt.record_ids
    return [{"image_id": ids[r], "category_id": c, "bbox": b, "score": s}
            for r, c, b, s in zip(rows.record.tolist(), rows.category.tolist(), rows.boxes.tolist(),
                                  rows.scores.tolist())]


def predictions_json_path(run_dir: Path, weights: str | Path | None) -> Path:
    """<run_dir>/<weights stem>_predictions.json, as val.py names it."""
    return Path(run_dir) / f"{Path(weights).stem if weights else ''}_predictions.json"
