"""val.py's own metrics as an evaluator: per-image matching on each rank, the matched detections to rank 0 in plan
order, then P, R, mAP50, mAP50-95 and the confusion matrix, as v7.0 computes them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from detval.distributed.comm import Comm
from detval.evaluation.records import Detections, ImageBatch, ImageResults, cat_rows
from detval.metrics.image_stats import ImageStats, image_stats
from detval.metrics.summary import DetectionMetrics, detection_metrics


@dataclass(frozen=True)
class YoloMetrics:
    """What evaluate() gives rank 0: the metrics, every image's results (plan order) and the confusion matrix."""

    metrics: DetectionMetrics
    images: ImageResults
    confusion: np.ndarray


class YoloEvaluator:
    """nc: classes the metrics count (1 with --single-cls)."""

    def __init__(self, nc: int) -> None:
        self.nc = nc
        self.confusion = np.zeros((nc + 1, nc + 1))
        self.ids: list[int] = []
        self.stats: list[ImageStats] = []
        self.merged: ImageResults | None = None

    def process(self, batch: ImageBatch) -> None:
        for i, det, lb in zip(batch.image_ids, batch.dets, batch.labels):
            self.ids.append(int(i))
            self.stats.append(image_stats(det, lb, self.confusion))

    def rank_results(self) -> ImageResults:
        """This rank's images so far, in processing order."""
        st = self.stats
        return ImageResults(
            image_ids=torch.tensor(self.ids, dtype=torch.int64),
            det_counts=torch.tensor([s.conf.shape[0] for s in st], dtype=torch.int64),
            det=Detections(cat_rows([s.boxes.float() for s in st], (0, 4), torch.float32),
                           cat_rows([s.conf.float() for s in st], (0,), torch.float32),
                           cat_rows([s.cls.float() for s in st], (0,), torch.float32)),
            correct=cat_rows([s.correct for s in st], (0, 10), torch.bool),
            label_counts=torch.tensor([s.target_cls.shape[0] for s in st], dtype=torch.int64),
            label_cls=cat_rows([s.target_cls.float() for s in st], (0,), torch.float32))

    def gather(self, comm: Comm) -> None:
        mine = self.rank_results()
        got = comm.gather_images(mine.image_ids, {
            "det": ({**mine.det.rows(), "correct": mine.correct}, mine.det_counts),
            "labels": ({"cls": mine.label_cls}, mine.label_counts)})
        confusions = comm.gather(self.confusion)
        if got is None:
            return
        ids, tables = got
        (det, det_counts), (labels, label_counts) = tables["det"], tables["labels"]
        self.merged = ImageResults(ids, det_counts, Detections.from_rows(det), det["correct"], label_counts,
                                   labels["cls"])
        self.confusion = sum(confusions)

    def evaluate(self) -> YoloMetrics:
        """Rank 0, after gather: all images' stats concatenated in plan order, as v7.0 concatenates them."""
        m = self.merged
        metrics = detection_metrics(m.correct.numpy(), m.det.conf.numpy(), m.det.cls.numpy(), m.label_cls.numpy(),
                                    self.nc)
        return YoloMetrics(metrics, m, self.confusion)
