"""Everything a run leaves in its folder: results.json, per_class.csv, --save-txt files, plots. Rank 0 only (in the
order and with the failure handling of report/run_folder.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from detval import __version__
from detval.config import ValConfig
from detval.evaluation.records import Detections
from detval.metrics.summary import DetectionMetrics
from detval.report.save_txt import detection_lines, write_detection_txt
from detval.results import ValResult, write_results_json


def write_txt_files(labels_dir: Path, records: list, image_ids: torch.Tensor, det_counts: torch.Tensor,
                    det: Detections, save_conf: bool) -> None:
    """One file per image with detections, named by the image's stem (val.py --save-txt)."""
    labels_dir.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate(([0], np.cumsum(det_counts.numpy())))
    for k, i in enumerate(image_ids.tolist()):
        a, b = offsets[k], offsets[k + 1]
        rec = records[i]
        lines = detection_lines(det.boxes[a:b], det.conf[a:b], det.cls[a:b], rec.shape_hw, save_conf)
        write_detection_txt(labels_dir / f"{Path(rec.path).stem}.txt", lines)


def write_metrics_files(run_dir: Path, cfg: ValConfig, result: ValResult, weights: dict) -> dict:
    """results.json and per_class.csv, each whole or absent. Returns the results.json dict."""
    data = result.to_json(cfg.settings(), __version__, weights)
    write_results_json(run_dir / "results.json", data)
    from detval.report.per_class_csv import write_per_class_csv

    write_per_class_csv(run_dir / "per_class.csv", data)
    return data


def write_plots(run_dir: Path, metrics: DetectionMetrics, confusion: np.ndarray, names: list[str],
                pred_cls: np.ndarray, mosaics=None) -> None:
    """The PNG plots and, given a mosaics.MosaicSource, the val_batch mosaics: every figure side by side on the
    idle cores; as v7.0, a figure that fails is a warning (the metrics are already written)."""
    from detval.forked import available_cores, run_forked
    from detval.report.mosaics import mosaic_jobs
    from detval.report.plots import PlotCurves, plot_jobs

    try:
        jobs = mosaic_jobs(run_dir, mosaics, names) if mosaics is not None else []
        if metrics.per_class:
            curves = PlotCurves.from_class_ap(metrics.per_class, np.unique(pred_cls))
            jobs += plot_jobs(run_dir, curves, confusion, names)
        errors = run_forked([draw for _, _, draw in jobs], [cost for _, cost, _ in jobs], available_cores())
    except Exception as e:  # noqa: BLE001
        errors = [f"{type(e).__name__}: {e}"]
    for error in errors:
        print(f"WARNING: plots not written: {error}", file=sys.stderr)
