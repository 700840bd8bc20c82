"""`detval val --save-json`'s COCO tail at COCO scale: what rank 0 does after the last batch, timed.

Run from the repository root:  python -m benchmarks.coco_tail [--images 5000] [--dets-per-image 300] [--repeat 3]
Synthetic per-image outputs (tests/coco_synth.py, seed 0: float32 xyxy boxes, conf, class, as NMS hands them to
the evaluators) go through the run's own CocoEvaluator on one process: process() every batch, then the tail:
gather (round the rows once, COCOeval.evaluate on the images, accumulate) and evaluate (write the predictions
JSON, summarize). The JSON written is checked against json.dump of the rows (same bytes) once.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detval import distributed
from detval.forked import available_cores
from detval.coco.format import load_coco_gt
from detval.coco.ground_truth import CocoGt
from detval.coco.predictions import predictions_json, write_predictions_json
from detval.evaluation import ImageBatch
from detval.evaluation.coco import CocoEvaluator
from tests.coco_synth import SynthSpec, make_coco_set


def synthetic_run(n_images: int, dets_per_image: int, seed: int = 0, batch: int = 32):
    """(CocoGt as a run builds it, ImageBatches in plan order) from a synthetic set: image i of the plan is
    the set's i-th image; class c is category class_map[c]."""
    spec = SynthSpec(n_images=n_images, n_cats=80, gt_per_image=8.1, dets_per_image=dets_per_image,
                     crowd_frac=0.012, duplicate_gt_frac=0.005, score_decimals=5, seed=seed)
    gt_dict, dets = make_coco_set(spec)
    gt = load_coco_gt(gt_dict)
    record_ids = [im["id"] for im in gt_dict["images"]]
    class_map = [int(c) for c in gt.category_ids]
    cls_of = {c: i for i, c in enumerate(class_map)}
    per_image: dict = {i: [] for i in record_ids}
    for d in dets:
        x, y, w, h = d["bbox"]
        per_image[d["image_id"]].append((x, y, x + w, y + h, d["score"], cls_of[d["category_id"]]))
    coco_gt = CocoGt(gt, gt_dict, record_ids, gt.image_index(record_ids), class_map, gt.category_names, "detval")
    batches = []
    for start in range(0, len(record_ids), batch):
        ids = list(range(start, min(start + batch, len(record_ids))))
        batches.append(ImageBatch(ids, [torch.tensor(per_image[record_ids[i]], dtype=torch.float32).reshape(-1, 6)
                                        for i in ids], [torch.zeros((0, 5)) for _ in ids]))
    return coco_gt, batches


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the forked workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def tail(gt: CocoGt, batches: list[ImageBatch], pred_json: Path):
    """(gather seconds, evaluate seconds, CPU seconds of both, COCO result, the evaluator) of one process fed
    every batch."""
    ev = CocoEvaluator(gt)
    for b in batches:
        ev.process(b)
    c0, t0 = _cpu(), time.perf_counter()
    ev.gather(distributed.Comm(distributed.single_process_context()))
    t1 = time.perf_counter()
    result = ev.evaluate(pred_json, say=lambda *a, **k: None)
    return t1 - t0, time.perf_counter() - t1, _cpu() - c0, result, ev


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets-per-image", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    gt, batches = synthetic_run(args.images, args.dets_per_image)
    n = sum(len(d) for b in batches for d in b.dets)
    print(f"{args.images} images, {n} detections; tail = gather + evaluate on rank 0 (one process)")
    with tempfile.TemporaryDirectory() as tmp:
        pred_json = Path(tmp) / "predictions.json"
        runs = []
        for r in range(args.repeat):
            g, e, cpu, result, ev = tail(gt, batches, pred_json)
            runs.append((g, e))
            print(f"run {r + 1}: gather {g:.2f} s + evaluate {e:.2f} s = tail {g + e:.2f} s, CPU {cpu:.2f} s "
                  f"over {available_cores()} cores (AP {result['stats'][0]:.4f})")
        t = time.perf_counter()
        write_predictions_json(pred_json, gt, ev.rows)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        expected = json.dumps(predictions_json(gt, ev.rows)).encode()
        t_dump = time.perf_counter() - t
        same = pred_json.read_bytes() == expected
    print(f"tail median {statistics.median(g + e for g, e in runs):.2f} s; predictions JSON alone: "
          f"{t_write:.2f} s (json.dump of the dicts: {t_dump:.2f} s), bytes identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
