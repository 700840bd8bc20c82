"""End to end, whole processes as a user runs them: YOLOv5 v7.0 val.py beside `detval`, yolov5n on coco128.

Run from the repository root:
    python -m benchmarks.e2e --yolov5 DIR [--yolov5-python PY] [--repeats 3] [--imgsz 640]
DIR is a YOLOv5 v7.0 checkout, run at run time as the oracle (never copied); PY a Python that can run it
(default: this one). Without --yolov5 only detval's rows are printed.

Every row is one command in its own process, start-up, imports, model loading, data scan, plots and exit
included, timed from outside (wall seconds and the child's peak RSS). The rows of one repeat run one after the
other, repeat after repeat, so that a busy machine slows all of them alike; the table gives the median and the
best of the repeats. Rows:
  val.py                  val.py at its command-line defaults (FP32, batch 32, plots) on CPU
  detval val              the same settings, detval's defaults (plots on)
  detval val --no-plots
  detval eval --raw       re-evaluation of a --save-raw cache (made once beforehand, untimed), plots on
  detval --help / detval compare A B
The printed 'all' rows (P, R, mAP50, mAP50-95) of val.py and detval must be identical: exit 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.oracle import OracleRun, all_row
from detval.paths import shared_data_dir


@dataclass(frozen=True)
class Row:
    label: str
    command: list[str]
    env: dict[str, str] | None = None
    validates: bool = True  # a validation run: its time is compared with val.py's


@dataclass
class Timing:
    seconds: list[float]
    peak_rss_mb: float = 0.0
    all_row: str | None = None


def run_timed(row: Row, cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and output (stdout + stderr) of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(row.command, cwd=cwd, env=row.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{row.label}: exit {proc.returncode}\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def detval_rows(weights: Path, data: Path, imgsz: int, raw: Path) -> list[Row]:
    val = ["detval", "val", "--weights", str(weights), "--data", str(data), "--imgsz", str(imgsz),
           "--device", "cpu", "--project", "runs", "--exist-ok"]
    return [Row("detval val", [*val, "--name", "plots"]),
            Row("detval val --no-plots", [*val, "--name", "noplots", "--no-plots"]),
            Row("detval eval --raw (plots)", ["detval", "eval", "--raw", str(raw), "--project", "runs",
                                              "--name", "eval", "--exist-ok"]),
            Row("detval --help", ["detval", "--help"], validates=False),
            Row("detval compare A B", ["detval", "compare", "runs/plots", "runs/eval"], validates=False)]


def measure(rows: list[Row], repeats: int, cwd: Path) -> dict[str, Timing]:
    timings = {row.label: Timing([]) for row in rows}
    for repeat in range(repeats):
        for row in rows:
            seconds, rss, output = run_timed(row, cwd)
            t = timings[row.label]
            t.seconds.append(seconds)
            t.peak_rss_mb = max(t.peak_rss_mb, rss)
            t.all_row = all_row(output) or t.all_row
            print(f"  repeat {repeat + 1}: {row.label:<28}{seconds:7.2f} s", file=sys.stderr, flush=True)
    return timings


def print_table(timings: dict[str, Timing], rows: list[Row], baseline: str | None) -> None:
    print("| command | median s | best s | peak RSS MB | val.py / this (median) |")
    print("|---|---|---|---|---|")
    base = statistics.median(timings[baseline].seconds) if baseline else None
    for row in rows:
        t = timings[row.label]
        median = statistics.median(t.seconds)
        ratio = f"{base / median:.2f}x" if base and row.validates else "-"
        print(f"| `{row.label}` | {median:.2f} | {min(t.seconds):.2f} | {t.peak_rss_mb:.0f} | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--yolov5", type=Path, help="a YOLOv5 v7.0 checkout (the oracle)")
    ap.add_argument("--yolov5-python", default=sys.executable, help="the Python that runs val.py")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=640)
    args = ap.parse_args()
    if args.yolov5 is not None and not (args.yolov5 / "val.py").is_file():
        raise SystemExit(f"--yolov5 {args.yolov5}: no val.py there")
    data_dir = shared_data_dir()
    weights, data = data_dir / "weights" / "yolov5n.pt", data_dir / "coco128" / "coco128.yaml"
    work = Path(tempfile.mkdtemp(prefix="detval-e2e-"))
    try:
        raw = work / "raw"
        subprocess.run(["detval", "val", "--weights", str(weights), "--data", str(data), "--imgsz",
                        str(args.imgsz), "--save-raw", str(raw), "--no-plots", "--quiet", "--project", "prep"],
                       cwd=work, check=True, stdout=subprocess.DEVNULL)
        rows = detval_rows(weights, data, args.imgsz, raw)
        if args.yolov5 is not None:
            oracle = OracleRun(args.yolov5.resolve(), args.yolov5_python, work / "oracle")
            rows.insert(0, Row("val.py", oracle.command(weights, data, "exp", ("--imgsz", str(args.imgsz))),
                               oracle.env()))
        timings = measure(rows, args.repeats, work)
        print(f"yolov5n, coco128 (128 images), imgsz {args.imgsz}, CPU, {os.cpu_count()} cores, "
              f"{args.repeats} repeats")
        print_table(timings, rows, "val.py" if args.yolov5 is not None else None)
        printed = {label: t.all_row for label, t in timings.items() if t.all_row}
        for label, row in printed.items():
            print(f"  {label:<28}{row}")
        if args.yolov5 is not None and len(set(printed.values())) != 1:
            raise SystemExit("the printed 'all' rows differ")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
