"""The curve and confusion-matrix PNGs that YOLOv5 v7.0 val.py writes, drawn deterministically.

Same figures as v7.0 (`utils/metrics.py` plot_pr_curve, plot_mc_curve, ConfusionMatrix.plot): 9x6 in curves and a
12x9 in matrix at 250 DPI, per-class lines labelled below 21 classes and thin grey otherwise, the class mean bold
blue. Differences, on purpose: the matrix is drawn with plain matplotlib (no seaborn), its x axis is labelled
'True' (v7.0 overwrote it with 'Predicted'), and PR-curve labels stay aligned with their classes when some
classes have no predictions (v7.0 shifted them).

Determinism: every figure is an Agg canvas of a fixed size and DPI drawn under matplotlib's default style (a
user's matplotlibrc cannot change it), and the PNG carries no Software tag, so identical inputs give identical
bytes in any process -- rank 0 of any world size writes the same files. No pyplot: no global figure state, no
display backend.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib
import matplotlib.style
import numpy as np
# Each figure gets its own Agg canvas: no pyplot, so no global backend to set (matplotlib.use() would switch --
# and close the figures of -- a notebook user who imports detval) and no display ever.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detval.metrics.ap import ClassAP, smooth
from detval.forked import run_forked

CURVE_FIGSIZE_IN = (9.0, 6.0)
MATRIX_FIGSIZE_IN = (12.0, 9.0)
DPI = 250
# v7.0: per-class legend only when 0 < K < 21, else every class a thin grey line.
MAX_LABELLED_CLASSES = 20
# v7.0 ConfusionMatrix.plot: names on the axes when 0 < nc < 99, numbers in the cells when nc < 30.
MAX_MATRIX_TICKLABELS = 98
MAX_MATRIX_ANNOTATED = 29
# Cells below this are left blank: they would print as 0.00.
MATRIX_BLANK_BELOW = 0.005
MEAN_SMOOTH_FRACTION = 0.05


@dataclass(frozen=True)
class PlotCurves:
    """The curves ap_per_class computes for plotting, for the K classes that have labels.

    px:        [1000] confidence (and recall) grid, np.linspace(0, 1, 1000).
    py:        [K, 1000] precision at recall px, IoU 0.5; a row of NaN marks a class with labels but no
               predictions (v7.0 draws no curve for it and leaves it out of the mean curve).
    ap:        [K, 10] AP at IoU 0.50:0.05:0.95.
    p, r, f1:  [K, 1000] precision, recall, F1 at confidence px.
    class_ids: [K] class ids (indexes into the dataset's names), ascending.
    """

    px: np.ndarray
    py: np.ndarray
    ap: np.ndarray
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    class_ids: np.ndarray

    @classmethod
    def from_class_ap(cls, result: ClassAP, detected: np.ndarray) -> PlotCurves:
        """Align ap_per_class's curves with its classes.

        ClassAP.py has a row only for the classes that have detections (as v7.0), in class order; detected:
        the class ids with at least one detection (np.unique(pred_cls)) say which rows those are.
        """
        classes = np.asarray(result.classes).reshape(-1).astype(int)
        px = np.asarray(result.px)
        has_curve = np.isin(classes, np.asarray(detected).reshape(-1).astype(int))
        py = np.asarray(result.py, dtype=np.float64).reshape(-1, len(px))
        if py.shape[0] != int(has_curve.sum()):
            raise ValueError(f"ClassAP.py has {py.shape[0]} rows but {int(has_curve.sum())} of its "
                             f"{len(classes)} classes have detections")
        aligned = np.full((len(classes), len(px)), np.nan)
        aligned[has_curve] = py
        return cls(px=px, py=aligned, ap=np.asarray(result.ap), p=np.asarray(result.p_curve),
                   r=np.asarray(result.r_curve), f1=np.asarray(result.f1_curve), class_ids=classes)


def _new_figure(size_in: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size_in, dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The layout once, then one draw. savefig would draw the figure twice: a layout engine (even the "none"
    # placeholder left by tight_layout) makes it run a non-rendering draw first, a quarter of the cost of an
    # 80-class matrix. print_png at the figure's own DPI and colours is savefig's final step alone. Same pixels.
    fig.tight_layout()
    fig.set_layout_engine("none")
    # No Software tag: the only thing that could differ between two matplotlib installs with equal drawing.
    # zlib level 1: the same pixels, encoded in half the time, in files about 25% larger.
    fig.canvas.print_png(path, metadata={"Software": None}, pil_kwargs={"compress_level": 1})


def _legend_outside(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")


def pr_curve_figure(px: np.ndarray, py: np.ndarray, ap: np.ndarray, names: list[str]) -> Figure:
    """The PR_curve.png figure (arguments as plot_pr_curve), unsaved."""
    px, py, ap = np.asarray(px), np.asarray(py, dtype=np.float64).reshape(-1, len(px)), np.asarray(ap)
    if not (py.shape[0] == ap.shape[0] == len(names)):
        raise ValueError(f"py has {py.shape[0]} rows, ap {ap.shape[0]}, names {len(names)}: they must agree")
    fig = _new_figure(CURVE_FIGSIZE_IN)
    ax = fig.add_subplot(1, 1, 1)
    k = py.shape[0]
    has_curve = ~np.isnan(py).all(axis=1) if k else np.zeros(0, dtype=bool)
    if 0 < k <= MAX_LABELLED_CLASSES:
        for i in np.flatnonzero(has_curve):
            ax.plot(px, py[i], linewidth=1, label=f"{names[i]} {ap[i, 0]:.3f}")
    elif has_curve.any():
        ax.plot(px, py[has_curve].T, linewidth=1, color="grey")
    if has_curve.any():
        # The legend's number is the mAP@0.5 of every class with labels, as val.py prints it; the bold
        # curve averages the classes that have a curve, as v7.0 draws it.
        ax.plot(px, py[has_curve].mean(0), linewidth=3, color="blue",
                label=f"all classes {ap[:, 0].mean():.3f} mAP@0.5")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _legend_outside(ax)
    ax.set_title("Precision-Recall Curve")
    return fig


def plot_pr_curve(px: np.ndarray, py: np.ndarray, ap: np.ndarray, names: list[str], path: Path) -> None:
    """Write the precision-recall curves at IoU 0.5 (v7.0 PR_curve.png), 2250x1500 px.

    px: [1000] recall grid. py: [K, 1000] precision at px, NaN rows for classes without predictions.
    ap: [K, 10] AP per class and IoU threshold. names: K class names, aligned with the rows.
    """
    with matplotlib.style.context("default"):
        _save(pr_curve_figure(px, py, ap, names), path)


def metric_curve_figure(px: np.ndarray, y: np.ndarray, names: list[str], ylabel: str) -> Figure:
    """The F1/P/R_curve.png figure (arguments as plot_metric_curve), unsaved."""
    px = np.asarray(px)
    y = np.asarray(y, dtype=np.float64).reshape(-1, len(px))
    if y.shape[0] != len(names):
        raise ValueError(f"y has {y.shape[0]} rows but {len(names)} names")
    fig = _new_figure(CURVE_FIGSIZE_IN)
    ax = fig.add_subplot(1, 1, 1)
    k = y.shape[0]
    if 0 < k <= MAX_LABELLED_CLASSES:
        for i in range(k):
            ax.plot(px, y[i], linewidth=1, label=names[i])
    elif k:
        ax.plot(px, y.T, linewidth=1, color="grey")
    if k:
        mean = smooth(y.mean(0), MEAN_SMOOTH_FRACTION)
        best = int(mean.argmax())
        ax.plot(px, mean, linewidth=3, color="blue", label=f"all classes {mean[best]:.2f} at {px[best]:.3f}")
    ax.set_xlabel("Confidence")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _legend_outside(ax)
    ax.set_title(f"{ylabel}-Confidence Curve")
    return fig


def plot_metric_curve(px: np.ndarray, y: np.ndarray, names: list[str], path: Path, ylabel: str) -> None:
    """Write a metric-vs-confidence plot (v7.0 F1/P/R_curve.png), 2250x1500 px.

    px: [1000] confidence grid. y: [K, 1000] the metric per class at px (classes with labels, zeros where a
    class has no predictions, as v7.0). The bold curve is the class mean smoothed by a 5% box filter, and its
    legend gives its maximum and the confidence where it is reached.
    """
    with matplotlib.style.context("default"):
        _save(metric_curve_figure(px, y, names, ylabel), path)


def _text_color(rgba) -> str:
    """Black on light cells, white on dark ones (sRGB relative luminance, the threshold seaborn uses)."""
    rgb = np.asarray(rgba[:3], dtype=np.float64)
    linear = np.where(rgb <= 0.03928, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return "black" if float(linear @ np.array([0.2126, 0.7152, 0.0722])) > 0.408 else "white"


def confusion_matrix_figure(matrix: np.ndarray, names: list[str], normalize: bool) -> Figure:
    """The confusion_matrix.png figure (arguments as plot_confusion_matrix), unsaved."""
    matrix = np.asarray(matrix, dtype=np.float64)
    nc = matrix.shape[0] - 1
    if matrix.shape != (nc + 1, nc + 1) or nc < 1:
        raise ValueError(f"confusion matrix must be square [nc+1, nc+1], got {matrix.shape}")
    array = matrix / (matrix.sum(0, keepdims=True) + 1e-9) if normalize else matrix.copy()
    array[array < MATRIX_BLANK_BELOW] = np.nan
    finite = array[np.isfinite(array)]
    vmax = float(finite.max()) if finite.size else 1.0

    fig = _new_figure(MATRIX_FIGSIZE_IN)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="white")
    image = ax.imshow(array, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    fig.colorbar(image, ax=ax)
    if 0 < len(names) <= MAX_MATRIX_TICKLABELS and len(names) == nc:
        ticklabels = list(names) + ["background"]
        # About 500 pt of axis for nc + 1 labels: shrink them so that 80 classes do not overlap.
        size = min(10.0, 500.0 / (nc + 1))
        ax.set_xticks(range(nc + 1), ticklabels, rotation=90, fontsize=size)
        ax.set_yticks(range(nc + 1), ticklabels, fontsize=size)
    if nc <= MAX_MATRIX_ANNOTATED:
        fmt = "{:.2f}" if normalize else "{:.0f}"
        for row, col in zip(*np.nonzero(np.isfinite(array))):
            value = array[row, col]
            ax.text(col, row, fmt.format(value), ha="center", va="center", fontsize=8,
                    color=_text_color(cmap(value / vmax)))
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion Matrix")
    return fig


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path, normalize: bool) -> None:
    """Write the detection confusion matrix (v7.0 confusion_matrix.png), 3000x2250 px.

    matrix: [nc+1, nc+1] counts, rows predicted class, columns true class, the last row/column background.
    names: the nc class names (the axes say 'background' for the last one); names go on the axes when
    0 < nc < 99 and len(names) == nc, else indices, as v7.0.
    normalize: divide each column by its sum (the share of each true class), as v7.0; False draws counts.
    Cells below 0.005 are blank; cells carry their value when nc < 30.
    """
    with matplotlib.style.context("default"), warnings.catch_warnings():
        # Dozens of tick labels may not fit tight_layout's margins; the figure is still complete.
        warnings.simplefilter("ignore", UserWarning)
        _save(confusion_matrix_figure(matrix, names, normalize), path)


CURVE_FILES = {"F1_curve.png": ("f1", "F1"), "P_curve.png": ("p", "Precision"), "R_curve.png": ("r", "Recall")}
# Relative drawing cost (measured on coco128: an 80-class matrix ~1.3 s, a curve ~0.3 s), to split the figures
# over processes.
MATRIX_COST, CURVE_COST = 4.5, 1.0


def plot_jobs(run_dir: Path, curves: PlotCurves, confusion: np.ndarray, names: list[str]) -> list[tuple]:
    """(path, cost, draw) for each figure of write_plots; draw() writes path."""
    run_dir = Path(run_dir)
    curve_names = [names[int(c)] for c in np.asarray(curves.class_ids).reshape(-1)]
    pr = run_dir / "PR_curve.png"
    jobs = [(pr, CURVE_COST, partial(plot_pr_curve, curves.px, curves.py, curves.ap, curve_names, pr))]
    for filename, (field, ylabel) in CURVE_FILES.items():
        path = run_dir / filename
        jobs.append((path, CURVE_COST,
                     partial(plot_metric_curve, curves.px, getattr(curves, field), curve_names, path, ylabel)))
    for filename, normalize in (("confusion_matrix.png", True), ("confusion_matrix_raw.png", False)):
        path = run_dir / filename
        jobs.append((path, MATRIX_COST, partial(plot_confusion_matrix, confusion, names, path, normalize)))
    return jobs


def write_plots(run_dir: Path, curves: PlotCurves, confusion: np.ndarray, names: list[str],
                processes: int = 1) -> list[Path]:
    """Write PR_curve.png, F1/P/R_curve.png, confusion_matrix.png (normalized) and confusion_matrix_raw.png.

    run_dir: the run folder. curves: PlotCurves.from_class_ap(...). confusion: [nc+1, nc+1] counts (rows
    predicted, columns true, last background). names: all nc class names, indexed by class id.
    processes: draw the figures side by side in this many processes (detval/forked.py); the files are the
    same. Returns the files written; raises RuntimeError naming the figures that failed.
    """
    jobs = plot_jobs(run_dir, curves, confusion, names)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    errors = run_forked([draw for _, _, draw in jobs], [cost for _, cost, _ in jobs], processes)
    if errors:
        raise RuntimeError("; ".join(errors))
    return [path for path, _, _ in jobs]
