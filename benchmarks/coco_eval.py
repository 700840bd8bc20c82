"""COCO bbox evaluation, whole processes and in-process: pycocotools, faster-coco-eval, hotcoco,
ultrafast-pycocotools and detval (1 and N processes), same files, same numbers.

Run from the repository root:  python -m benchmarks.coco_eval [--images 5000] [--repeat 3] [--skip-pycocotools]
                                                              [--in-process]
The set is synthetic (tests/coco_synth.py, seed 0) at COCO val2017 scale by default: 5,000 images, 80
categories, ~36k GT boxes (1% crowd), 300 detections per image, written to GT and detections JSON files.

Whole process (the default): each tool runs in its own subprocess on those two files, as a user runs it
(`python benchmarks/coco_tool.py TOOL GT DT`; `python -m detval cocoeval GT DT --json --workers N`), start-up
included. Printed as a markdown table: wall seconds (median of --repeat runs; pycocotools and faster-coco-eval
run once), CPU seconds (user + system, all processes), peak RSS of the largest process (what /usr/bin/time
reports), peak PSS summed over all the tool's processes (sampled every 20 ms: shared pages counted once), and
whether the 12 stats and every per-class AP equal pycocotools' exactly.

--in-process adds the rows this benchmark had before: evaluate + accumulate + summarize from already loaded
inputs (loading reported on its own line), detval in this process and split over processes.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


REPO = Path(__file__).resolve().parent.parent
TOOLS = ("pycocotools", "faster-coco-eval", "hotcoco", "ultrafast")
SLOW = ("pycocotools", "faster-coco-eval")     # minutes at full size: run once


@dataclass
class Measured:
    wall: float
    cpu: float
    max_rss_mb: float
    pss_sum_mb: float
    stats: list
    per_class: list | None


def _tree_pss_kb(pid: int) -> int:
    """Pss of pid and its descendants, in kB (0 for processes that are gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


def run_whole(cmd: list[str]) -> Measured:
    """Run cmd (its stdout: {"stats", "per_class"} JSON), measuring wall, CPU and memory of its process tree."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_pss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)    # rusage of the tree: Popen.wait would discard it
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    data = _as_tool_output(json.loads(out))
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, peak[0] / 1024,
                    data["stats"], data["per_class"])


def tool_command(tool: str, gt: Path, dt: Path) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / "coco_tool.py"), tool, str(gt), str(dt)]


def detval_command(gt: Path, dt: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "detval", "cocoeval", str(gt), str(dt), "--json", "--workers", str(workers)]


def _as_tool_output(data: dict) -> dict:
    """detval cocoeval --json ({"stats": {name: v}, "per_class_ap": {name: v}}) in coco_tool.py's form."""
    if "per_class_ap" in data:
        return {"stats": list(data["stats"].values()), "per_class": list(data["per_class_ap"].values())}
    return data


def whole_process_rows(gt: Path, dt: Path, procs: int, repeat: int, skip_pycocotools: bool) -> list[tuple]:
    """(name, processes, [Measured, ...]) per tool, runs alternated so that machine load hits all alike."""
    tools = [t for t in TOOLS if not (skip_pycocotools and t == "pycocotools")]
    rows = {t: (t, "1" if t != "ultrafast" and t != "hotcoco" else "threads", []) for t in tools}
    rows["detval"] = ("`detval cocoeval --workers 1`", "1", [])
    rows[f"detval x{procs}"] = (f"`detval cocoeval --workers {procs}`", str(procs), [])
    commands = {t: tool_command(t, gt, dt) for t in tools}
    commands["detval"] = detval_command(gt, dt, 1)
    commands[f"detval x{procs}"] = detval_command(gt, dt, procs)
    for r in range(repeat):
        for key, cmd in commands.items():
            if r and key in SLOW:
                continue
            rows[key][2].append(run_whole(cmd))
    return list(rows.values())


def print_table(rows: list[tuple], reference: Measured | None) -> None:
    print("| tool | processes | wall s (median) | CPU s | peak RSS MB (largest process) | peak PSS MB (all) "
          "| stats vs pycocotools | per-class AP |")
    print("|---|---|---|---|---|---|---|---|")
    for name, procs, runs in rows:
        best = min(runs, key=lambda m: m.wall)
        wall = statistics.median(m.wall for m in runs)
        cpu = statistics.median(m.cpu for m in runs)
        rss = max(m.max_rss_mb for m in runs)
        pss = max(m.pss_sum_mb for m in runs)
        print(f"| {name} | {procs} | {wall:.2f} ({len(runs)} runs) | {cpu:.2f} | {rss:.0f} | {pss:.0f} | "
              f"{_same(best.stats, reference and reference.stats)} | "
              f"{_same(best.per_class, reference and reference.per_class)} |")


def _same(ours, ref) -> str:
    if ref is None or ours is None:
        return "n/a"
    if ours == ref:
        return "identical"
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(ref)))) if len(ours) == len(ref) else float("inf")
    return f"differ by up to {diff:.1e}"


def write_set(folder: Path, spec: SynthSpec) -> tuple[Path, Path, str]:
    """The set's GT and detections files in folder, and a line describing it."""
    gt_dict, dets = make_coco_set(spec)
    gt, dt = folder / "gt.json", folder / "dt.json"
    gt.write_text(json.dumps(gt_dict))
    dt.write_text(json.dumps(dets))
    line = (f"set: {len(gt_dict['images'])} images, {len(gt_dict['categories'])} categories, "
            f"{len(gt_dict['annotations'])} GT ({sum(a['iscrowd'] for a in gt_dict['annotations'])} crowd), "
            f"{len(dets)} detections; files {gt.stat().st_size / 1e6:.1f} MB + {dt.stat().st_size / 1e6:.1f} MB")
    return gt, dt, line


def write_set_apart(folder: Path, spec: SynthSpec) -> tuple[Path, Path, str]:
    """write_set in a child process: a tool started from a process that held the set (about 1 GB of Python
    objects) would report that process's peak as its own (ru_maxrss survives fork and exec)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(write_set, (folder, spec))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets-per-image", type=int, default=300)
    ap.add_argument("--procs", type=int, default=0, help="detval's N-process row (default: one per core)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-pycocotools", action="store_true", help="it takes minutes at full size")
    ap.add_argument("--in-process", action="store_true", help="also the in-process rows")
    args = ap.parse_args(argv)
    from detval.forked import available_cores
    procs = args.procs or min(available_cores(), 8)

    spec = SynthSpec(n_images=args.images, n_cats=80, gt_per_image=8.1, dets_per_image=args.dets_per_image,
                     crowd_frac=0.012, duplicate_gt_frac=0.005, score_decimals=5, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path, line = write_set_apart(Path(tmp), spec)
        print(f"{line}; {available_cores()} cores, load average {os.getloadavg()[0]:.1f} at the start\n")
        rows = whole_process_rows(gt_path, dt_path, procs, args.repeat, args.skip_pycocotools)
        reference = next((runs[0] for name, _, runs in rows if name == "pycocotools"), None)
        print_table(rows, reference)
        if args.in_process:
            print()
            in_process(json.loads(gt_path.read_text()), json.loads(dt_path.read_text()), args.procs or 2,
                       args.skip_pycocotools)
    return 0


def in_process(gt_dict: dict, dets_list: list, procs: int, skip_pycocotools: bool) -> None:
    gt, t_load_gt = _timed(load_coco_gt, gt_dict)
    dets, t_load_dt = _timed(load_coco_dets, dets_list, gt)
    print(f"in process; detval load: GT {t_load_gt:.2f}s, detections {t_load_dt:.2f}s (not in the timings below)")
    results: dict[str, tuple[np.ndarray, float]] = {}
    res, t = _timed(coco_evaluate, gt, dets)
    results["detval"] = (res.stats, t)
    res_mp, t = _timed(evaluate_in_processes, gt, dets, procs)
    results[f"detval x{procs} (images)"] = (res_mp.stats, t)
    res_cat, t = _timed(evaluate_by_categories, gt, dets, procs)
    results[f"detval x{procs} (categories)"] = (res_cat.stats, t)
    backends = ["faster-coco-eval"] + ([] if skip_pycocotools else ["pycocotools"])
    for backend in backends:
        timings: dict = {}
        res_ref = reference_evaluate(backend, gt_dict, dets_list, timings=timings)
        results[backend] = (res_ref.stats, timings["evaluate"])
        print(f"{backend} load (COCO index + loadRes): {timings['load']:.2f}s (not in the timings below)")
    base = results["detval"][1]
    print(f"{'evaluator':<24}{'seconds':>10}{'vs detval':>11}  stats vs detval's")
    for name, (stats, t) in results.items():
        diff = np.abs(stats - res.stats).max()
        same = "identical" if np.array_equal(stats, res.stats) else f"differ by up to {diff:.1e}"
        print(f"{name:<24}{t:>10.2f}{t / base:>10.1f}x  {same}")


if __name__ == "__main__":
    raise SystemExit(main())
