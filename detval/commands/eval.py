"""`detval eval --raw DIR`: re-evaluate a raw-output cache (`detval val --save-raw`) at other thresholds."""
from __future__ import annotations

import argparse

from detval.api import evaluate_raw
from detval.commands.options import config_from_args


def run(args: argparse.Namespace) -> int:
    evaluate_raw(config_from_args(args))
    return 0
