"""`detval compare RUN_A RUN_B`: what changed between two validation runs (b - a), from their results.json."""
from __future__ import annotations

import argparse
import json

from detval.errors import DetvalError
from detval.report.compare import compare_runs, comparison_to_json, format_comparison
from detval.results import read_results_json


def run(args: argparse.Namespace) -> int:
    if args.threshold < 0 or args.top < 0:
        raise DetvalError("--threshold and --top must not be negative")
    a, b = (read_results_json(path) for path in (args.run_a, args.run_b))
    try:
        comparison = compare_runs(a, b, args.threshold, labels=(str(args.run_a), str(args.run_b)))
    except KeyError as e:
        raise DetvalError(f"results.json lacks {e}: not written by this detval?") from None
    if args.json:
        print(json.dumps(comparison_to_json(comparison), indent=1))
    else:
        print(format_comparison(comparison, top=args.top or None))
    return 0
