"""COCO bbox evaluation speed: pycocotools vs faster-coco-eval vs detval (1 and N processes), same numbers.

Run from the repository root:  python -m benchmarks.coco_eval [--images 5000] [--skip-pycocotools]
The set is synthetic (tests/coco_synth.py) at COCO val2017 scale by default: 5,000 images, 80 categories,
~36k GT boxes (1% crowd), 300 detections per image. Timed: evaluate + accumulate + summarize (+ per-class AP
for detval), from already loaded inputs; loading is reported on its own line.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from detval.coco.format import CocoDetections, CocoGroundTruth, load_coco_dets, load_coco_gt
from detval.coco.evaluate import (CocoAccumulated, CocoParams, CocoResult, PerImageEval, accumulate,
                                      category_shares, coco_evaluate, evaluate_images, join_categories, merge,
                                      per_class_ap, summarize)
from detval.coco.reference import reference_evaluate
from tests.coco_synth import SynthSpec, make_coco_set

_shared: dict = {}  # inherited by forked workers, so the inputs are not pickled


def _evaluate_share(img_ids: list) -> dict:
    gt, dets, params = _shared["gt"], _shared["dets"], _shared["params"]
    return evaluate_images(gt, dets, img_ids, params).as_arrays()


def _accumulate_share(params: CocoParams) -> CocoAccumulated:
    gt, dets = _shared["gt"], _shared["dets"]
    return accumulate(evaluate_images(gt, dets, None, params), params)


def evaluate_by_categories(gt: CocoGroundTruth, dets: CocoDetections, n_proc: int) -> CocoResult:
    """Each of n_proc worker processes evaluates and accumulates every n_proc-th category over all images and
    ships back its small precision/recall arrays; the parent joins them and summarizes. Nothing serial is left
    but the join: accumulate, the larger half of the work, is spread too (a distributed `detval val --save-json`
    accumulates by category share on each rank the same way, after regrouping its per-image results)."""
    params = CocoParams.for_gt(gt)
    _shared.update(gt=gt, dets=dets)
    with mp.get_context("fork").Pool(n_proc) as pool:
        parts = pool.map(_accumulate_share, category_shares(params, n_proc))
    acc = join_categories(params, parts)
    return CocoResult(stats=summarize(acc), per_class_ap=per_class_ap(acc), accumulated=acc)


def evaluate_in_processes(gt: CocoGroundTruth, dets: CocoDetections, n_proc: int) -> CocoResult:
    """Each of n_proc worker processes evaluates every n_proc-th image; the parent merges and accumulates alone
    (shipping the per-image arrays costs about what the split saves: the serial accumulate stays)."""
    params = CocoParams.for_gt(gt)
    _shared.update(gt=gt, dets=dets, params=params)
    ids = gt.image_ids.tolist()
    with mp.get_context("fork").Pool(n_proc) as pool:
        parts = pool.map(_evaluate_share, [ids[r::n_proc] for r in range(n_proc)])
    acc = accumulate(merge([PerImageEval.from_arrays(p) for p in parts]), params)
    return CocoResult(stats=summarize(acc), per_class_ap=per_class_ap(acc), accumulated=acc)


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets-per-image", type=int, default=300)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-pycocotools", action="store_true", help="it takes minutes at full size")
    args = ap.parse_args(argv)

    spec = SynthSpec(n_images=args.images, n_cats=80, gt_per_image=8.1, dets_per_image=args.dets_per_image,
                     crowd_frac=0.012, duplicate_gt_frac=0.005, score_decimals=5, seed=args.seed)
    (gt_dict, dets_list), t_gen = _timed(make_coco_set, spec)
    print(f"set: {len(gt_dict['images'])} images, {len(gt_dict['categories'])} categories, "
          f"{len(gt_dict['annotations'])} GT ({sum(a['iscrowd'] for a in gt_dict['annotations'])} crowd), "
          f"{len(dets_list)} detections (generated in {t_gen:.1f}s)")
    gt, t_load_gt = _timed(load_coco_gt, gt_dict)
    dets, t_load_dt = _timed(load_coco_dets, dets_list, gt)
    print(f"detval load: GT {t_load_gt:.2f}s, detections {t_load_dt:.2f}s (not in the timings below)")

    results: dict[str, tuple[np.ndarray, float]] = {}
    res, t = _timed(coco_evaluate, gt, dets)
    results["detval"] = (res.stats, t)
    res_mp, t = _timed(evaluate_in_processes, gt, dets, args.procs)
    results[f"detval x{args.procs} (images)"] = (res_mp.stats, t)
    res_cat, t = _timed(evaluate_by_categories, gt, dets, args.procs)
    results[f"detval x{args.procs} (categories)"] = (res_cat.stats, t)
    backends = ["faster-coco-eval"] + ([] if args.skip_pycocotools else ["pycocotools"])
    for backend in backends:
        timings: dict = {}
        res_ref = reference_evaluate(backend, gt_dict, dets_list, timings=timings)
        results[backend] = (res_ref.stats, timings["evaluate"])
        print(f"{backend} load (COCO index + loadRes): {timings['load']:.2f}s (not in the timings below)")

    print(res.summary())
    base = results["detval"][1]
    print(f"{'evaluator':<24}{'seconds':>10}{'vs detval':>11}  stats vs detval's")
    for name, (stats, t) in results.items():
        diff = np.abs(stats - res.stats).max()
        same = "identical" if np.array_equal(stats, res.stats) else f"differ by up to {diff:.1e}"
        print(f"{name:<24}{t:>10.2f}{t / base:>10.1f}x  {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
