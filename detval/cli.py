"""`detval` command line: the options of every command come from detval.commands.options (cheap to import); a
command's work, detval.commands.<name>.run(args), is imported only when that command runs, so `detval --help`
and `detval compare` never load torch. Errors become exit codes here, and only here:

- a user's mistake (DetvalError, a missing file, a ValConfig setting out of range, a failed rank): one line
  "detval: error: ..." and exit 2, as argparse exits for a bad option;
- Ctrl-C: "detval: interrupted" and exit 130;
- anything else is a bug: its traceback, one line with the command's settings to report, and exit 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from detval.commands.options import PARSERS
from detval.errors import DetvalError

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# A multi-process run raises this for a failed rank. Looked up rather than imported: importing it imports torch,
# and a command that never launched ranks cannot have raised it.
_LAUNCH_ERROR = ("detval.distributed.launch", "LaunchError")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detval", description="Exact, fast, multi-device YOLOv5 validation")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSERS.values():
        add(sub)
    return parser


def is_user_error(e: BaseException) -> bool:
    """Whether e is the user's to fix (bad file, bad setting, a rank that failed) rather than a detval bug."""
    launch = sys.modules.get(_LAUNCH_ERROR[0])
    launch_error = getattr(launch, _LAUNCH_ERROR[1], None)
    return isinstance(e, (DetvalError, FileNotFoundError)) or (launch_error is not None and isinstance(e, launch_error))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(f"detval.commands.{args.command}").run(args) or 0)
    except KeyboardInterrupt:
        print("detval: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 -- the one place that turns every error into an exit code
        if is_user_error(e):
            print(f"detval: error: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
        traceback.print_exc()
        settings = " ".join(f"{k}={v!r}" for k, v in vars(args).items() if k != "command")
        print(f"detval: internal error in `detval {args.command}` ({settings}); this is a bug, please report it "
              "with the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
