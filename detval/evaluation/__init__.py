"""Evaluators: what a run computes from its detections, behind one contract (detectron2's process / gather /
evaluate). Each rank feeds its batches to `process` (native-pixel detections and labels, any batch order);
`gather` is collective, through a `distributed.Comm`, and leaves everything on rank 0; `evaluate` (rank 0)
returns the metrics. Implementations: `yolo.YoloEvaluator` (val.py's P, R, mAP, confusion matrix) and
`coco.CocoEvaluator` (--save-json: the predictions JSON and COCO's 12 numbers)."""
from __future__ import annotations

from typing import Any, Protocol

from detval.distributed.comm import Comm
from detval.evaluation.records import Detections, ImageBatch, ImageResults


class Evaluator(Protocol):
    def process(self, batch: ImageBatch) -> None: ...

    def gather(self, comm: Comm) -> None: ...

    def evaluate(self, *args: Any, **kwargs: Any) -> Any: ...


__all__ = ["Detections", "Evaluator", "ImageBatch", "ImageResults"]
