"""`detval compare RUN_A RUN_B`: what changed between two validation runs (b - a), from their results.json."""
from __future__ import annotations

import argparse
import json
import sys

DEFAULT_TOP = 20


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="compare two runs' results.json (deltas are b - a)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_a", metavar="RUN_A", help="baseline run folder (or its results.json)")
    p.add_argument("run_b", metavar="RUN_B", help="run folder (or results.json) compared against RUN_A")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="flag classes whose mAP50 or mAP50-95 moved by more than this")
    p.add_argument("--json", action="store_true", help="print the whole comparison as JSON instead of a table")
    p.add_argument("--top", type=int, default=DEFAULT_TOP,
                   help="per-class rows in the table, largest mAP50-95 change first (0: all)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from detval.report.compare import compare_runs, comparison_to_json, format_comparison
    from detval.results import read_results_json

    if args.threshold < 0 or args.top < 0:
        print("detval: error: --threshold and --top must not be negative", file=sys.stderr)
        return 2
    runs = []
    for path in (args.run_a, args.run_b):
        try:
            runs.append(read_results_json(path))
        except FileNotFoundError as e:
            print(f"detval: error: {e} (is it a detval run folder?)", file=sys.stderr)
            return 1
        except json.JSONDecodeError as e:
            print(f"detval: error: {path}: results.json is not valid JSON ({e})", file=sys.stderr)
            return 1
    a, b = runs
    try:
        comparison = compare_runs(a, b, args.threshold, labels=(str(args.run_a), str(args.run_b)))
    except KeyError as e:
        print(f"detval: error: results.json lacks {e}: not written by this detval?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(comparison_to_json(comparison), indent=1))
    else:
        print(format_comparison(comparison, top=args.top or None))
    return 0
