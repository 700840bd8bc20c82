"""Every command's options, defined once and cheap to import (argparse and detval.config only).

The run commands (val, eval, bench) share one table of flags, `RUN_FLAGS`: each names a ValConfig field, whose
default and type it takes from ValConfig itself, so `--help` and the Python API cannot disagree. A command's
implementation (detval.commands.<name>.run) is imported only when that command runs.
"""
from __future__ import annotations

import argparse
import functools
import types
import typing
from dataclasses import MISSING, dataclass, fields

from detval.config import CACHE_KINDS, COCO_BACKENDS, SCHEDULES, TASKS, ValConfig

VAL, EVAL, BENCH = "val", "eval", "bench"
DEFAULT_TOP = 20  # detval compare: per-class rows in the table


@dataclass(frozen=True)
class Flag:
    """One option of the run commands.

    names: the option strings, the first one spelling the ValConfig field (`--batch-size` -> batch_size) unless
    `dest` names it. commands: which of val, eval and bench take it. A bool field becomes a switch that flips
    its default (`--half`; `--no-plots` with dest plots). `overrides`: argparse keywords for one command only.
    """

    names: tuple[str, ...]
    commands: frozenset[str]
    help: str | None = None
    dest: str | None = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    overrides: tuple[tuple[str, dict], ...] = ()

    @property
    def field(self) -> str:
        return self.dest or self.names[0].lstrip("-").replace("-", "_")

    def argparse_kwargs(self, command: str) -> dict:
        """add_argument's keywords for `command`: default and type from ValConfig's field."""
        default, kind = _field_default(self.field), _field_type(self.field)
        kw: dict = {"dest": self.field, "help": self.help}
        if kind is bool:
            kw.update(action="store_false" if default else "store_true")
        else:
            kw.update(type=kind, required=self.required, choices=self.choices, metavar=self.metavar)
            if not self.required:
                kw["default"] = default
        kw.update(dict(self.overrides).get(command, {}))
        return {k: v for k, v in kw.items() if v is not None}


def _flag(names: str, commands: str, help: str | None = None, **kw) -> Flag:
    return Flag(tuple(names.split()), frozenset(commands.split()), help, **kw)


RUN_FLAGS: tuple[Flag, ...] = (
    _flag("--weights", "val bench", "checkpoint (.pt; several: an ensemble), state_dict (with --cfg), .torchscript "
          "or .onnx", required=True, overrides=((VAL, {"nargs": "+"}), (BENCH, {"nargs": "+"}))),
    _flag("--data", "val bench", "data.yaml, or a COCO instances.json with --images", required=True),
    _flag("--raw", "eval", "folder written by val --save-raw", dest="save_raw", required=True, metavar="DIR"),
    _flag("--images", "val", "image folder for a COCO JSON --data"),
    _flag("--cfg", "val bench", "model yaml for a plain state_dict"),
    _flag("--imgsz --img --img-size", "val bench", "inference size (pixels)"),
    _flag("--batch-size", "val bench", "images per batch"),
    _flag("--conf-thres", "val eval bench", "confidence threshold"),
    _flag("--iou-thres", "val eval bench", "NMS IoU threshold"),
    _flag("--max-det", "val eval", "maximum detections per image"),
    _flag("--task", "val", "speed: conf 0.25, iou 0.45, no plots, square batches (as val.py)", choices=TASKS),
    _flag("--device", "val eval bench", "cpu, 0, or 0,1,2,3 (one process per device)",
          overrides=((EVAL, {"default": "cpu", "choices": ("cpu",), "help": "re-evaluation runs on the CPU"}),)),
    _flag("--nproc", "val eval", "processes with --device cpu"),
    _flag("--dp", "val", "DataParallel over the listed CUDA devices (one process)"),
    _flag("--schedule", "val", "batch assignment to ranks", choices=SCHEDULES),
    _flag("--threads", "val bench", "torch threads per process (default: cores / processes)",
          overrides=((BENCH, {"help": "torch intra-op threads (default: torch's)"}),)),
    _flag("--workers", "val", "max dataloader workers per process"),
    _flag("--single-cls", "val eval", "treat every class as one"),
    _flag("--verbose", "val eval", "per-class rows even when nc >= 50"),
    _flag("--save-txt", "val eval", "write detections as labels/*.txt"),
    _flag("--save-conf", "val eval", "with --save-txt: add the confidence"),
    _flag("--save-json", "val eval", "write COCO predictions JSON, print COCO mAP"),
    _flag("--coco-backend", "val eval", "COCO evaluator for --save-json", choices=COCO_BACKENDS),
    _flag("--half", "val bench", "FP16 inference"),
    _flag("--save-raw", "val", "store NMS candidates per batch (re-evaluation, resume)", metavar="DIR"),
    _flag("--cache", "val bench", "cache decoded, letterboxed images", choices=CACHE_KINDS),
    _flag("--cache-dir", "val bench", "disk image cache folder (default $DETVAL_CACHE_DIR or ~/.cache/detval/images)"),
    _flag("--channels-last", "val", "NHWC convolutions (faster on some CPUs; NOT exact)"),
    _flag("--no-plots", "val eval", "write no PR/F1/P/R curves or confusion matrices", dest="plots"),
    _flag("--project", "val eval", "folder of run folders"),
    _flag("--name", "val eval", "run folder name (exp, exp2, ... unless --exist-ok)"),
    _flag("--exist-ok", "val eval", "reuse project/name instead of a new exp<N>"),
    _flag("--quiet", "val eval", "print nothing but errors"),
    _flag("--dnn", "val", "run an .onnx file with OpenCV DNN instead of onnxruntime"),
    _flag("--export-batch", "val", "an exported model with a dynamic batch axis: --batch-size images a batch "
          "(val.py runs batch 1; digits: see the README)"),
    _flag("--augment", "val bench", "test-time augmentation (3 scales, a flip), as val.py"),
    _flag("--save-hybrid", "val eval", "labels join the NMS input (high mAP: not the model's alone); implies --save-txt"),
)


def _field_default(name: str):
    field = next(f for f in fields(ValConfig) if f.name == name)
    return None if field.default is MISSING else field.default


@functools.cache
def _config_hints() -> dict:
    return typing.get_type_hints(ValConfig)   # evaluates every annotation: once per process, not per flag


def _field_type(name: str) -> type:
    """int for `int`, `int | None` or `Optional[int]` (the annotation is a string under __future__ annotations)."""
    hint = _config_hints()[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_run_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add every RUN_FLAGS entry that `command` takes, in table order."""
    for flag in RUN_FLAGS:
        if command in flag.commands:
            parser.add_argument(*flag.names, **flag.argparse_kwargs(command))


def config_from_args(args: argparse.Namespace) -> ValConfig:
    """The ValConfig of a run command's parsed options (options that are not ValConfig fields are left out)."""
    names = {f.name for f in fields(ValConfig)}
    return ValConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def _subparser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_val(sub) -> None:
    add_run_flags(_subparser(sub, VAL, "validate a YOLOv5 checkpoint on a dataset (as val.py)"), VAL)


def add_eval(sub) -> None:
    """`detval eval --raw DIR`: the metrics at other thresholds from a raw-output cache, without the model."""
    p = _subparser(sub, EVAL, "recompute NMS and metrics from a --save-raw cache")
    add_run_flags(p, EVAL)
    p.set_defaults(weights="", data="")


def add_bench(sub) -> None:
    p = _subparser(sub, BENCH, "time each stage of a validation (images/s per stage)")
    add_run_flags(p, BENCH)
    p.add_argument("--max-batches", type=int, help="time only the first N batches of the plan")
    p.add_argument("--whole-batches", action="store_true", help="CPU: run each batch at once, not in chunks")


def add_cocoeval(sub) -> None:
    p = _subparser(sub, "cocoeval", "COCO mAP of a detections JSON against an instances JSON")
    p.add_argument("gt", metavar="GT.json", help="COCO instances (ground truth) file")
    p.add_argument("dets", metavar="DETECTIONS.json", help="COCO results list (e.g. YOLOv5 *_predictions.json)")
    p.add_argument("--iou-type", default="bbox", choices=["bbox"])
    p.add_argument("--json", action="store_true", help="print {stats, per_class_ap} as JSON instead of the summary")
    p.add_argument("--backend", "--coco-backend", dest="backend", default="detval", choices=(*COCO_BACKENDS, "ultrafast"),
                   help="evaluator; the others need the optional packages of the same name")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that read and evaluate side by side (detval backend; 0: one per core for "
                        "files over 4 MB)")


def add_compare(sub) -> None:
    p = _subparser(sub, "compare", "compare two runs' results.json (deltas are b - a)")
    p.add_argument("run_a", metavar="RUN_A", help="baseline run folder (or its results.json)")
    p.add_argument("run_b", metavar="RUN_B", help="run folder (or results.json) compared against RUN_A")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="flag classes whose mAP50 or mAP50-95 moved by more than this")
    p.add_argument("--json", action="store_true", help="print the whole comparison as JSON instead of a table")
    p.add_argument("--top", type=int, default=DEFAULT_TOP,
                   help="per-class rows in the table, largest mAP50-95 change first (0: all)")


# Command name -> the function that adds its subparser; its implementation is detval.commands.<name>.run.
PARSERS = {VAL: add_val, EVAL: add_eval, "cocoeval": add_cocoeval, "compare": add_compare, BENCH: add_bench}
