"""`detval` command line: one subcommand per module in detval.commands, each with add_parser(sub) and run(args)."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("val", "eval", "cocoeval", "compare", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detval", description="Exact, fast, multi-device YOLOv5 validation")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"detval.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"detval.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("detval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
