"""Run YOLOv5 v7.0 val.py beside detval: the oracle, used at run time from a user's checkout, never copied.

val.py writes its labels cache beside the labels folder and may try to download a font or pip-install packages.
`OracleRun` gives it a scratch view of the dataset (symlinks: the shared data stays untouched), a data.yaml
with an absolute path, a config folder holding a stand-in Arial.ttf (matplotlib's DejaVu Sans; only the
val_batch mosaics' text uses it) and an environment that forbids installs and lets torch 2.6+ unpickle the
official checkpoint as v7.0 expects (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

# val.py and detval both print the 'all' row as: all  images  instances  P  R  mAP50  mAP50-95.
ALL_ROW = re.compile(r"^\s*all\s+\d+\s+\d+(\s+[0-9.]+){4}\s*$", re.M)


def all_row(output: str) -> str | None:
    """The printed 'all' row of a val.py or detval run, whitespace-normalized; None when absent."""
    rows = [m.group(0) for m in ALL_ROW.finditer(output)]
    return " ".join(rows[-1].split()) if rows else None


@dataclass(frozen=True)
class OracleRun:
    """How to run val.py from `yolov5` (a v7.0 checkout) with `python` on one dataset, in `scratch`."""

    yolov5: Path
    python: str
    scratch: Path

    def command(self, weights: Path, data_yaml: Path, name: str, extra: tuple[str, ...] = ()) -> list[str]:
        """val.py's command line for `weights` on a scratch view of `data_yaml`, CPU, FP32 (its CLI default)."""
        return [self.python, str(self.yolov5 / "val.py"), "--weights", str(weights), "--data",
                str(self.dataset_view(data_yaml)), "--device", "cpu", "--project", str(self.scratch / "runs"),
                "--name", name, "--exist-ok", *extra]

    def env(self) -> dict[str, str]:
        config = self.scratch / "config"
        if not (config / "Arial.ttf").is_file():
            import matplotlib
            config.mkdir(parents=True, exist_ok=True)
            font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            shutil.copyfile(font, config / "Arial.ttf")
        return {**os.environ, "YOLOv5_AUTOINSTALL": "false", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
                "YOLOV5_CONFIG_DIR": str(config), "PYTHONPATH": str(self.yolov5)}

    def dataset_view(self, data_yaml: Path) -> Path:
        """A data.yaml whose root is a scratch folder of symlinks to the dataset's images and label folders.

        images/<split> and labels/<split> are real folders of links to the original files: val.py resolves the
        split folder (Path.resolve follows a linked folder back to the shared data, and its labels/<split>.cache
        would land there), not the files inside it.
        """
        data_yaml = Path(data_yaml)
        spec = yaml.safe_load(data_yaml.read_text())
        root = (data_yaml.parent / spec.get("path", ".")).resolve()
        view = self.scratch / "data" / data_yaml.stem
        for kind in ("images", "labels"):
            for split in sorted({spec[k] for k in ("train", "val") if spec.get(k)}):
                source = root / split.replace("images", kind, 1)
                link = view / split.replace("images", kind, 1)
                if source.is_dir() and not link.exists():
                    link.mkdir(parents=True)
                    for f in sorted(source.iterdir()):
                        (link / f.name).symlink_to(f)
        out = view / data_yaml.name
        out.write_text(yaml.safe_dump({**spec, "path": str(view)}, sort_keys=False))
        return out
