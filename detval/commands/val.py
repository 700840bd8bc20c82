"""`detval val`: validate a checkpoint on a dataset (options: detval.commands.options, named as val.py's)."""
from __future__ import annotations

import argparse

from detval.api import validate
from detval.commands.options import config_from_args


def run(args: argparse.Namespace) -> int:
    validate(config_from_args(args))
    return 0
