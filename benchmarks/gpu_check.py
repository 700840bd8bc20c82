"""One prepared GPU check: yolov5n on coco128 on one CUDA device, in under 8 minutes.

Run from the repository root on a machine with a GPU:
    python -m benchmarks.gpu_check [--device 0] [--imgsz 640] [--out DIR] [--dry-run]
Runs `detval val` (whole processes, plots off) as:
  fp32        --device D                       (the reference run on the GPU)
  half        --device D --half                (FP16; other digits, as val.py's --half)
  dp          --device D --dp                  (DataParallel on the one GPU: must equal fp32)
  2 ranks     --device D,D                     (two ranks sharing the GPU, gloo: must equal fp32)
  cpu         --device cpu                     (the CPU run, for the GPU-vs-CPU delta)
and prints a markdown table: P, R, mAP50, mAP50-95, per-stage ms/image, wall seconds, the largest metric
difference to the CPU run and to fp32, and whether dp and 2 ranks give fp32's digits (results.json metrics
and maps compared exactly). --dry-run prints the commands only (no GPU needed). Exit 1 if dp or 2 ranks differ
from fp32.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

METRICS = ("P", "R", "mAP50", "mAP50-95")
STAGES = ("preprocess", "inference", "nms")


@dataclass(frozen=True)
class Check:
    name: str
    flags: tuple[str, ...]
    same_as_fp32: bool  # must give fp32's digits exactly


def checks(device: str) -> list[Check]:
    """The runs of the check, for CUDA device index `device`."""
    if not device.isdigit():
        raise SystemExit(f"--device {device!r}: one CUDA device index, such as 0")
    return [Check("fp32", ("--device", device), False),
            Check("half", ("--device", device, "--half"), False),
            Check("dp", ("--device", device, "--dp"), True),
            Check("2 ranks", ("--device", f"{device},{device}"), True),
            Check("cpu", ("--device", "cpu"), False)]


def command(check: Check, weights: Path, data: Path, imgsz: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "detval", "val", "--weights", str(weights), "--data", str(data), "--imgsz",
            str(imgsz), *check.flags, "--no-plots", "--quiet", "--project", str(out),
            "--name", check.name.replace(" ", "_"), "--exist-ok"]


def run(check: Check, cmd: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    res = json.loads((out / check.name.replace(" ", "_") / "results.json").read_text())
    res["process_seconds"] = time.perf_counter() - t0
    return res


def max_delta(a: dict, b: dict) -> float:
    return max(abs(a["metrics"][k] - b["metrics"][k]) for k in METRICS)


def same_digits(a: dict, b: dict) -> bool:
    return a["metrics"] == b["metrics"] and a["maps"] == b["maps"]


def table(results: dict[str, dict], checks_: list[Check]) -> tuple[list[str], bool]:
    """Markdown rows, and whether every run that must equal fp32 does."""
    rows = ["| run | P | R | mAP50 | mAP50-95 | pre / inf / NMS ms/img | process s | vs cpu | vs fp32 | same digits |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    fp32, cpu, ok = results.get("fp32"), results.get("cpu"), True
    for c in checks_:
        r = results[c.name]
        if "error" in r:
            rows.append(f"| {c.name} | failed: {r['error']} |||||||||")
            ok = ok and not c.same_as_fp32
            continue
        m, s = r["metrics"], r.get("speed_ms_per_image") or {}
        speed = " / ".join(f"{s.get(k, float('nan')):.1f}" for k in STAGES)
        good = lambda ref: ref is not None and "error" not in ref  # noqa: E731
        vs_cpu = f"{max_delta(r, cpu):.2e}" if good(cpu) else "-"
        vs_fp32 = f"{max_delta(r, fp32):.2e}" if good(fp32) else "-"
        same = "-"
        if c.same_as_fp32:
            equal = good(fp32) and same_digits(r, fp32)
            ok = ok and equal
            same = "yes" if equal else "NO"
        rows.append(f"| {c.name} | {m['P']:.6f} | {m['R']:.6f} | {m['mAP50']:.6f} | {m['mAP50-95']:.6f} | {speed} | "
                    f"{r['process_seconds']:.1f} | {vs_cpu} | {vs_fp32} | {same} |")
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    from detval.paths import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="0", help="one CUDA device index")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--out", type=Path, help="run folders (default: a temporary folder)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    data_dir = shared_data_dir()
    weights, data = data_dir / "weights" / "yolov5n.pt", data_dir / "coco128" / "coco128.yaml"
    out = args.out or Path(tempfile.mkdtemp(prefix="detval-gpu-check-"))
    plan = checks(args.device)
    if args.dry_run:
        for c in plan:
            print(" ".join(command(c, weights, data, args.imgsz, out)))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(int(args.device))}; "
          f"yolov5n, coco128, imgsz {args.imgsz}")
    results = {}
    for c in plan:
        results[c.name] = run(c, command(c, weights, data, args.imgsz, out), out)
        print(f"  {c.name}: done", file=sys.stderr, flush=True)
    rows, ok = table(results, plan)
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
