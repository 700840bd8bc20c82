"""Multi-process scaling of `detval val`: images/s on one process vs one process per device, same metrics.

Run from the repository root:
    python benchmarks/scaling.py [--imgsz 640] [--batch-size 32]      # CPU: 1 process x C threads vs C x 1
    python benchmarks/scaling.py --device 0,1,2,3                      # GPUs: 1 GPU vs one process per GPU
C is this machine's cores (--nproc to change the number of processes). Both runs go through the Python API,
`detval.api.validate(ValConfig(...))`, on the real data (coco128, yolov5n by default), and must report the
same metrics (exit 1 otherwise). Throughput is read from the result's "distributed" summary: images over the
batch phase (from the first batch until rank 0 holds every rank's statistics; model loading and the data scan
excluded). images / wall_seconds (those included) and the end-to-end time (process start-up included) are
printed too. On a shared machine the figures are noisy:
--repeat N keeps each configuration's best run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from detval.api import validate
from detval.config import ValConfig
from detval.paths import shared_data_dir
from detval.results import ValResult


@dataclass(frozen=True)
class Setup:
    """One way to run the same validation."""

    label: str  # "1 process x 2 threads", "4 processes (cuda 0,1,2,3)"
    processes: int
    device: str
    nproc: int
    threads: int | None


@dataclass(frozen=True)
class Measured:
    setup: Setup
    phase_ips: float  # images / batch-phase seconds, from the result's "distributed" summary
    wall_ips: float  # images / the run's wall_seconds (model load and scan included)
    end_to_end_s: float  # the whole validate() call, process start-up included
    metrics: dict


def setups(device: str, nproc: int | None) -> tuple[Setup, Setup]:
    """(one process, several) for a device string: "cpu" shares the cores, "0,1,..." one process per GPU."""
    if device.strip().lower() in ("", "cpu"):
        cores = len(os.sched_getaffinity(0))
        n = nproc or cores
        per_rank = max(1, cores // n)
        return (Setup(f"1 process x {cores} threads", 1, "cpu", 1, cores),
                Setup(f"{n} processes x {per_rank} thread{'s' * (per_rank > 1)}", n, "cpu", n, per_rank))
    gpus = [d.strip() for d in device.split(",") if d.strip()]
    if nproc not in (None, len(gpus)):
        raise SystemExit("--nproc: with GPUs, one process per listed device")
    return (Setup(f"1 process (cuda {gpus[0]})", 1, gpus[0], 1, None),
            Setup(f"{len(gpus)} processes (cuda {','.join(gpus)})", len(gpus), ",".join(gpus), 1, None))


def throughput(result: ValResult) -> tuple[float, float]:
    """(images/s over the batch phase, images/s over the run's wall_seconds)."""
    return float(result.distributed["images_per_s"]), result.images / result.wall_seconds


def measure(setup: Setup, base: dict, out_dir: Path, repeat: int) -> Measured:
    """The best of `repeat` runs (by wall-seconds throughput)."""
    best = None
    for i in range(repeat):
        cfg = ValConfig(**base, device=setup.device, nproc=setup.nproc, threads=setup.threads,
                        project=str(out_dir), name=f"p{setup.processes}-{i}", exist_ok=True)
        t0 = time.perf_counter()
        result = validate(cfg)
        end_to_end = time.perf_counter() - t0
        phase, wall = throughput(result)
        run = Measured(setup, phase, wall, end_to_end, result.metrics)
        print(f"  {setup.label}: {phase:.1f} images/s batch phase, {wall:.1f} images/s over wall_seconds, "
              f"{end_to_end:.1f} s end to end", flush=True)
        if best is None or run.wall_ips > best.wall_ips:
            best = run
    return best


def main(argv: list[str] | None = None) -> int:
    data = shared_data_dir()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(data / "weights" / "yolov5n.pt"))
    ap.add_argument("--data", default=str(data / "coco128" / "coco128.yaml"))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu, or CUDA indices 0,1,... (one process per GPU)")
    ap.add_argument("--nproc", type=int, help="processes on the CPU (default: one per core)")
    ap.add_argument("--schedule", default="dynamic", choices=["dynamic", "static"])
    ap.add_argument("--workers", type=int, default=8, help="max dataloader workers per process")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration; the best counts")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    one, many = setups(args.device, args.nproc)
    base = dict(weights=args.weights, data=args.data, imgsz=args.imgsz, batch_size=args.batch_size,
                schedule=args.schedule, workers=args.workers, quiet=True, plots=False)
    print(f"detval scaling: {Path(args.weights).name} on {args.data} at {args.imgsz} px, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="detval-scaling-") as tmp:
        a = measure(one, base, Path(tmp), args.repeat)
        b = measure(many, base, Path(tmp), args.repeat)
    ips_a, ips_b, source = a.phase_ips, b.phase_ips, "batch phase"
    ratio = ips_b / ips_a
    print(f"{one.label:>28}: {ips_a:8.1f} images/s ({source})")
    print(f"{many.label:>28}: {ips_b:8.1f} images/s ({source})")
    print(f"{'ratio':>28}: {ratio:8.2f}x ({ratio / many.processes:.0%} efficiency over {many.processes} processes)")
    same = a.metrics == b.metrics
    print(f"{'metrics':>28}: {'identical' if same else 'DIFFER: ' + json.dumps([a.metrics, b.metrics])}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "settings": vars(args), "measure": source, "ratio": ratio, "metrics_identical": same,
            "runs": [{"label": m.setup.label, "processes": m.setup.processes, "images_per_s": ips,
                      "phase_images_per_s": m.phase_ips, "wall_images_per_s": m.wall_ips,
                      "end_to_end_s": m.end_to_end_s, "metrics": m.metrics} for m, ips in ((a, ips_a), (b, ips_b))],
        }, indent=1))
    return 0 if same else 1


if __name__ == "__main__":  # spawned ranks re-import this file: they must not run the benchmark again
    sys.exit(main())
