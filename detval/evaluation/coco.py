"""--save-json as an evaluator: val.py's predictions JSON and COCO's bbox metrics.

    process (every rank: its images' detections)  ->  gather (every rank rounds its rows once, as the JSON will
    hold them, and runs COCOeval.evaluate on its own images; the per-image results of each category share go to one
    rank, which accumulates them; rank 0 gets the accumulated arrays and every row, plan order)  ->  evaluate
    (rank 0: the JSON file, summarize, or a reference library on the JSON's rows)
A run of one rank leaves COCOeval's evaluate and accumulate to `evaluate`, which runs them in forked processes
beside the one writing the JSON.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from detval.coco.evaluate import (CocoAccumulated, PerImageEval, accumulate, accumulate_images, category_shares,
                                  evaluate_images, format_summary, join_categories, per_class_ap, select_categories,
                                  summarize)
from detval.coco.format import CocoDetections, per_class_by_name
from detval.coco.ground_truth import CocoGt
from detval.coco.predictions import CocoRows, coco_rows, predictions_json, write_predictions_json
from detval.distributed.comm import Comm
from detval.evaluation.records import ImageBatch, cat_rows
from detval.forked import available_cores, fork_map


MAX_WORKERS = 8   # forked processes that share rank 0's JSON writing (and categories, when the run has one rank)
JSON_SHARE = 0.45  # of a one-rank run's COCO tail at COCO scale: its workers split so (benchmarks/coco_tail.py)


class CocoEvaluator:
    """gt: the run's COCO ground truth (coco.ground_truth.coco_ground_truth), built on every rank."""

    def __init__(self, gt: CocoGt) -> None:
        self.gt = gt
        self.ids: list[int] = []
        self.dets: list[torch.Tensor] = []
        self.rows: CocoRows | None = None  # rank 0 after gather: every image's rows, plan order
        self.image_ids: np.ndarray | None = None  # rank 0 after gather: every image of the run, plan order
        self.accumulated: CocoAccumulated | None = None
        self._unaccumulated: tuple[CocoDetections, list] | None = None  # one rank: evaluate() accumulates these

    def process(self, batch: ImageBatch) -> None:
        self.ids.extend(int(i) for i in batch.image_ids)
        self.dets.extend(d.cpu() for d in batch.dets)

    def _my_rows(self) -> tuple[torch.Tensor, torch.Tensor, CocoRows]:
        ids = torch.tensor(self.ids, dtype=torch.int64)
        counts = torch.tensor([len(d) for d in self.dets], dtype=torch.int64)
        det = cat_rows(self.dets, (0, 6), torch.float32).numpy()
        record = np.repeat(ids.numpy(), counts.numpy())
        return ids, counts, coco_rows(self.gt.class_map, record, det[:, :4], det[:, 4], det[:, 5])

    def gather(self, comm: Comm) -> None:
        ids, counts, rows = self._my_rows()
        if self.gt.backend == "detval" and comm.n_shares == 1:   # one rank: accumulated beside the JSON's writing
            self._unaccumulated = self._my_dets(ids.numpy(), rows)
        elif self.gt.backend == "detval":
            self.accumulated = self._accumulate(comm, self._evaluate_images(ids.numpy(), rows))
        if not comm.ctx.is_distributed and bool((ids[1:] > ids[:-1]).all()):   # already what gather returns
            self.image_ids, self.rows = ids.numpy(), rows
            return
        got = comm.gather_images(ids, {"rows": ({"category": torch.from_numpy(rows.category),
                                                 "boxes": torch.from_numpy(rows.boxes),
                                                 "scores": torch.from_numpy(rows.scores)}, counts)})
        if got is not None:
            all_ids, tables = got
            cols, all_counts = tables["rows"]
            self.image_ids = all_ids.numpy()
            self.rows = CocoRows(np.repeat(self.image_ids, all_counts.numpy()), cols["category"].numpy(),
                                 cols["boxes"].numpy(), cols["scores"].numpy())

    def _accumulate_writing(self, pred_json: Path, workers: int) -> CocoAccumulated:
        """One rank: COCOeval.evaluate and accumulate of its category shares in forked processes while others
        write the predictions JSON (about 45% of the work at COCO scale): workers processes in all."""
        json_workers = max(1, round(workers * JSON_SHARE)) if workers > 1 else 0
        shares = category_shares(self.gt.params, max(1, workers - json_workers))
        dets, img_ids = self._unaccumulated

        def job(i: int) -> CocoAccumulated | None:
            if i < len(shares):
                return accumulate_images(self.gt.gt, dets, img_ids, shares[i])
            write_predictions_json(pred_json, self.gt, self.rows, json_workers)
            return None

        parts = fork_map(job, len(shares) + (1 if json_workers else 0))
        if not json_workers:
            write_predictions_json(pred_json, self.gt, self.rows)
        return join_categories(self.gt.params, parts[:len(shares)])

    def _accumulate(self, comm: Comm, part: PerImageEval) -> CocoAccumulated | None:
        """COCOeval's accumulate of every rank's per-image results, spread over the ranks by category (exact:
        categories accumulate independently)."""
        params = self.gt.params
        shares = category_shares(params, comm.n_shares)
        got = comm.exchange([part_as_ragged(select_categories(part, s.cat_ids)) for s in shares])
        mine = part_from_ragged(got, part)
        accumulated = comm.gather(accumulate(mine, shares[comm.ctx.rank]))
        return join_categories(params, accumulated) if comm.is_main else None

    def per_image(self) -> PerImageEval:
        """COCOeval.evaluate on the images processed so far."""
        ids, _, rows = self._my_rows()
        return self._evaluate_images(ids.numpy(), rows)

    def _evaluate_images(self, ids: np.ndarray, rows: CocoRows) -> PerImageEval:
        """COCOeval.evaluate on this rank's images (with or without detections); images the GT lacks are skipped."""
        return evaluate_images(self.gt.gt, *self._my_dets(ids, rows), self.gt.params)

    def _my_dets(self, ids: np.ndarray, rows: CocoRows) -> tuple[CocoDetections, list]:
        """(rows on images of the GT as CocoDetections, the GT image ids of this rank's images)."""
        gt = self.gt
        index = gt.record_index[rows.record]
        keep = index >= 0
        dets = CocoDetections("detval run", index[keep], rows.category[keep], rows.boxes[keep], rows.scores[keep])
        mine = gt.record_index[ids]
        return dets, gt.gt.image_ids[mine[mine >= 0]].tolist()

    def evaluate(self, pred_json: Path, say: Callable[..., None] = print) -> dict | None:
        """Rank 0: write the predictions JSON (plan order, as val.py's jdict), print and return COCO's metrics as
        results.json's "coco": {"stats": [12], "per_class_ap": {name: AP}}. As val.py, nothing is written or
        evaluated when the run has no detection at all (returns None)."""
        gt, rows = self.gt, self.rows
        if not len(rows.scores):
            return None
        label = "COCO (detval)" if gt.backend == "detval" else gt.backend
        say(f"\nEvaluating {label} mAP... saving {pred_json}...")
        workers = min(available_cores(), MAX_WORKERS)
        if self._unaccumulated is not None:
            self.accumulated = self._accumulate_writing(pred_json, workers)
        else:
            write_predictions_json(pred_json, gt, rows, workers)
        if gt.note:
            say(gt.note)
        if gt.backend == "detval":
            stats, per_class = summarize(self.accumulated), per_class_ap(self.accumulated)
        else:
            from detval.coco.reference import reference_evaluate
            in_gt = gt.record_index[rows.record] >= 0
            if not in_gt.any():
                say("WARNING: no detection is on an image of the COCO ground truth; COCO metrics skipped")
                return None
            evaluated = [gt.record_ids[i] for i in self.image_ids.tolist() if gt.record_index[i] >= 0]
            jdict = predictions_json(gt, rows)
            result = reference_evaluate(gt.backend, gt.source, [d for d, k in zip(jdict, in_gt.tolist()) if k],
                                        img_ids=evaluated)
            stats, per_class = result.stats, result.per_class_ap
        say(format_summary(stats))
        return {"stats": [float(x) for x in stats], "per_class_ap": per_class_by_name(per_class, gt.names)}


def part_as_ragged(part: PerImageEval) -> tuple:
    """A PerImageEval as one ragged table keyed by image (for Comm.exchange): each image's GT groups and
    detection rows, tagged so that they can be told apart again."""
    img = torch.from_numpy(part.img_index.astype(np.int64))
    n_gt, n_det = _rows_per_image(part.img_index, part.gt_img), _rows_per_image(part.img_index, part.det_img)
    A, T = part.det_status.shape[1:]
    K = part.gt_count.shape[1]
    # one row per GT group or detection: GT groups first within each image, as the flags say
    rows, counts = _interleave(part, n_gt, n_det, A, T, K)
    return img, rows, counts


def _interleave(part: PerImageEval, n_gt: np.ndarray, n_det: np.ndarray, A: int, T: int, K: int):
    n = n_gt + n_det
    is_gt = np.zeros(int(n.sum()), bool)
    start = np.concatenate(([0], np.cumsum(n)[:-1]))
    gt_pos = (np.repeat(start, n_gt) + _ragged_arange(n_gt)).astype(np.int64)
    det_pos = (np.repeat(start + n_gt, n_det) + _ragged_arange(n_det)).astype(np.int64)
    is_gt[gt_pos] = True
    total = len(is_gt)
    cat = np.zeros(total, part.gt_cat.dtype)
    cat[gt_pos], cat[det_pos] = part.gt_cat, part.det_cat
    count = np.zeros((total, K), part.gt_count.dtype)
    count[gt_pos] = part.gt_count
    rank = np.zeros(total, part.det_rank.dtype)
    rank[det_pos] = part.det_rank
    score = np.zeros(total, part.det_score.dtype)
    score[det_pos] = part.det_score
    status = np.zeros((total, A, T), part.det_status.dtype)
    status[det_pos] = part.det_status
    rows = {"is_gt": torch.from_numpy(is_gt), "cat": torch.from_numpy(cat), "count": torch.from_numpy(count),
            "rank": torch.from_numpy(rank), "score": torch.from_numpy(score), "status": torch.from_numpy(status)}
    return rows, torch.from_numpy(n.astype(np.int64))


def part_from_ragged(got: tuple, like: PerImageEval) -> PerImageEval:
    """What Comm.exchange returned (see part_as_ragged), as one PerImageEval sorted by image."""
    ids, rows, counts = got
    ids_np = ids.numpy()
    row_img = np.repeat(ids_np, counts.numpy())
    g = rows["is_gt"].numpy()
    A, T = like.det_status.shape[1:]
    return PerImageEval(
        img_index=ids_np, gt_img=row_img[g], gt_cat=rows["cat"].numpy()[g],
        gt_count=rows["count"].numpy()[g].reshape(-1, like.gt_count.shape[1]),
        det_img=row_img[~g], det_cat=rows["cat"].numpy()[~g], det_rank=rows["rank"].numpy()[~g],
        det_score=rows["score"].numpy()[~g], det_status=rows["status"].numpy()[~g].reshape(-1, A, T))


def _rows_per_image(img_index: np.ndarray, row_img: np.ndarray) -> np.ndarray:
    """Rows per image: row_img [N] sorted, each one of img_index [I] (ascending) -> int64 [I]."""
    return (np.searchsorted(row_img, img_index, "right") - np.searchsorted(row_img, img_index, "left")).astype(np.int64)


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """[0..counts[0]), [0..counts[1]), ... concatenated."""
    total = int(counts.sum())
    if not total:
        return np.zeros(0, np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts
