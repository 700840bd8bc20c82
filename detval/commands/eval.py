"""`detval eval --raw DIR`: re-evaluate a raw-output cache at other thresholds (see commands/val.py)."""
from detval.commands.val import add_eval_parser as add_parser  # noqa: F401
