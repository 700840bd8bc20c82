"""Typed settings of one validation run (the CLI and the Python API both build a ValConfig)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from detval.errors import DetvalError

TASKS = ("train", "val", "test", "speed")
SCHEDULES = ("dynamic", "static")
CACHE_KINDS = ("ram", "disk")
COCO_BACKENDS = ("detval", "pycocotools", "faster-coco-eval")  # COCO evaluators: detval's and the references
# val.py --task speed times the model: these thresholds and no plots, whatever else was asked (v7.0 main()).
SPEED_SETTINGS = {"conf_thres": 0.25, "iou_thres": 0.45, "plots": False}


class ConfigError(DetvalError, ValueError):
    """A setting out of range; a ValueError too, for callers of the Python API that catch that."""


@dataclass(frozen=True)
class ValConfig:
    """What `detval val` takes. Names and defaults follow YOLOv5 v7.0 val.py's command line."""

    weights: str | tuple[str, ...]  # one file, or several (an ensemble of .pt checkpoints)
    data: str
    imgsz: int = 640
    batch_size: int = 32
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    task: str = "val"  # train, val, test or speed (speed: SPEED_SETTINGS override the thresholds and plots)
    device: str = ""  # "", "cpu", "0", "0,1,2,3"
    workers: int = 8
    single_cls: bool = False
    verbose: bool = False
    save_txt: bool = False
    save_conf: bool = False
    save_json: bool = False
    half: bool = False
    project: str = "runs/val"
    name: str = "exp"
    exist_ok: bool = False
    plots: bool = True
    cfg: str | None = None  # model yaml, for a plain state_dict
    images: str | None = None  # image folder when --data is a COCO instances.json
    nproc: int = 1  # CPU processes with --device cpu
    dp: bool = False  # DataParallel over the listed devices
    schedule: str = "dynamic"  # dynamic or static batch assignment across ranks
    threads: int | None = None  # torch intra-op threads per process (default: cores / processes)
    coco_backend: str = "detval"
    save_raw: str | None = None  # raw-output cache folder (re-evaluation, resume)
    cache: str | None = None  # image cache: ram or disk
    cache_dir: str | None = None  # disk image cache folder (default $DETVAL_CACHE_DIR, else ~/.cache/detval/images)
    channels_last: bool = False  # NHWC convolutions: faster on some CPUs, NOT exact (see DetectionModel)
    quiet: bool = False
    dnn: bool = False  # an .onnx file through OpenCV DNN instead of onnxruntime (val.py --dnn)
    export_batch: bool = False  # an exported file with a dynamic batch axis: --batch-size images a batch (not val.py's 1)
    augment: bool = False  # test-time augmentation, as val.py --augment (model/augment.py)
    save_hybrid: bool = False  # labels join the NMS input as conf-1 rows, as val.py; implies save_txt (as its CLI)

    def __post_init__(self) -> None:
        if isinstance(self.weights, (list, tuple)):  # one file stays a plain path (results.json, compare)
            object.__setattr__(self, "weights", self.weights[0] if len(self.weights) == 1 else tuple(self.weights))
        if self.task == "speed":  # applied here, so that the API and the CLI run the same settings
            for name, value in SPEED_SETTINGS.items():
                object.__setattr__(self, name, value)  # frozen: __post_init__ is the one place it may be set
        if self.save_hybrid:  # val.py's parse_opt: save_txt |= save_hybrid
            object.__setattr__(self, "save_txt", True)
        if str(self.data).endswith("coco.yaml"):  # and save_json |= data.endswith('coco.yaml')
            object.__setattr__(self, "save_json", True)
        self._check()

    def _check(self) -> None:
        checks = [
            (self.imgsz > 0, f"--imgsz must be positive, got {self.imgsz}"),
            (self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}"),
            (0.0 <= self.conf_thres <= 1.0, f"--conf-thres must be in [0, 1], got {self.conf_thres}"),
            (0.0 <= self.iou_thres <= 1.0, f"--iou-thres must be in [0, 1], got {self.iou_thres}"),
            (self.max_det > 0, f"--max-det must be positive, got {self.max_det}"),
            (self.task in TASKS, f"--task must be {_one_of(TASKS)}, got {self.task}"),
            (self.nproc > 0, f"--nproc must be positive, got {self.nproc}"),
            (self.cache in (None, *CACHE_KINDS), f"--cache must be {_one_of(CACHE_KINDS)}, got {self.cache}"),
            (self.schedule in SCHEDULES, f"--schedule must be {_one_of(SCHEDULES)}, got {self.schedule}"),
            (self.coco_backend in COCO_BACKENDS,
             f"--coco-backend must be {_one_of(COCO_BACKENDS)}, got {self.coco_backend}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def weights_list(self) -> tuple[str, ...]:
        """--weights as a tuple of files (one unless an ensemble)."""
        return self.weights if isinstance(self.weights, tuple) else (self.weights,)

    def settings(self) -> dict:
        """All settings as a plain dict for results.json."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _one_of(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}"


def increment_path(path: Path, exist_ok: bool = False) -> Path:
    """runs/val/exp -> runs/val/exp2, exp3, ... as YOLOv5 does, unless exist_ok."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    n = 2
    while Path(f"{path}{n}").exists():
        n += 1
    return Path(f"{path}{n}")
