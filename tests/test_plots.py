"""report/plots.py: the v7.0 curve and confusion-matrix PNGs, drawn deterministically."""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detval.metrics.ap import ap_per_class
from detval.report.plots import (PlotCurves, confusion_matrix_figure, metric_curve_figure, plot_metric_curve,
                                 plot_pr_curve, pr_curve_figure, write_plots)

REPO = Path(__file__).resolve().parents[1]
# 9x6 in and 12x9 in at 250 DPI, as v7.0 saves them.
CURVE_PX = (2250, 1500)
MATRIX_PX = (3000, 2250)


def _detections(seed: int = 0, nc: int = 8):
    """Matched detections for ap_per_class: classes 1, 3, 4, 6 have labels; 6 gets no detection, 5 only FPs."""
    rng = np.random.default_rng(seed)
    target_cls = np.repeat([1, 3, 4, 6], [12, 30, 7, 5]).astype(float)
    pred_cls = rng.choice([1, 3, 4, 5], size=200).astype(float)
    conf = rng.random(200)
    # Higher confidence, likelier true positive; a TP at a high IoU threshold is one at every lower one.
    iou = np.where(pred_cls == 5, 0.0, rng.random(200) * conf * 1.2)
    tp = iou[:, None] > np.linspace(0.5, 0.95, 10)[None]
    return tp, conf, pred_cls, target_cls, [f"class{i}" for i in range(nc)]


@pytest.fixture(scope="module")
def curves():
    tp, conf, pred_cls, target_cls, names = _detections()
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    return result, PlotCurves.from_class_ap(result, np.unique(pred_cls)), names


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_from_class_ap_aligns_pr_rows_with_classes(curves):
    result, c, _ = curves
    assert list(c.class_ids) == [1, 3, 4, 6]
    assert result.py.shape[0] == 3  # class 6 has labels but no detection: v7.0 gives it no row
    assert np.isnan(c.py[3]).all()
    np.testing.assert_array_equal(c.py[:3], result.py)
    np.testing.assert_array_equal(c.f1, result.f1_curve)
    with pytest.raises(ValueError, match="rows"):
        PlotCurves.from_class_ap(result, np.array([1, 3, 4, 6]))  # claims 4 curves, ClassAP has 3


def test_pr_legend_labels_each_class_and_the_mean(curves):
    result, c, names = curves
    fig = pr_curve_figure(c.px, c.py, c.ap, [names[i] for i in c.class_ids])
    labels = _legend(fig)
    # The undetected class draws no curve; the others are labelled with their own AP@0.5.
    assert labels[:3] == [f"class{k} {result.ap[i, 0]:.3f}" for i, k in enumerate([1, 3, 4])]
    assert labels[3] == f"all classes {result.ap[:, 0].mean():.3f} mAP@0.5"
    assert len(labels) == 4
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[-1].get_ydata(), result.py.mean(0))  # mean of the real curves only


def test_many_classes_are_grey_and_unlabelled():
    rng = np.random.default_rng(1)
    k = 25
    px = np.linspace(0, 1, 1000)
    py = np.sort(rng.random((k, 1000)), axis=1)[:, ::-1]
    ap = rng.random((k, 10))
    fig = pr_curve_figure(px, py, ap, [f"c{i}" for i in range(k)])
    assert _legend(fig) == [f"all classes {ap[:, 0].mean():.3f} mAP@0.5"]
    grey = [ln for ln in fig.axes[0].get_lines() if ln.get_color() == "grey"]
    assert len(grey) == k


def test_metric_curve_legend_gives_smoothed_peak():
    # A tent peaking at sample 500: the 51-sample box filter keeps the peak there and lowers it to
    # 0.9 - 0.9/500 * (2 * (1 + ... + 25)) / 51 = 0.877.
    px = np.linspace(0, 1, 1000)
    tent = 0.9 - 0.9 * np.abs(np.arange(1000) - 500) / 500
    fig = metric_curve_figure(px, np.stack([tent, tent]), ["a", "b"], "F1")
    assert _legend(fig) == ["a", "b", f"all classes 0.88 at {px[500]:.3f}"]
    assert f"{px[500]:.3f}" == "0.501"
    assert fig.axes[0].get_title() == "F1-Confidence Curve"


def test_confusion_matrix_normalizes_columns_and_names_axes():
    counts = np.array([[8, 1, 2], [2, 9, 0], [0, 0, 0]], dtype=float)  # column sums 10, 10, 2
    texts = lambda fig: sorted(t.get_text() for t in fig.axes[0].texts)  # noqa: E731
    norm = confusion_matrix_figure(counts, ["cat", "dog"], normalize=True)
    assert texts(norm) == sorted(["0.80", "0.10", "1.00", "0.20", "0.90"])  # zeros stay blank
    raw = confusion_matrix_figure(counts, ["cat", "dog"], normalize=False)
    assert texts(raw) == sorted(["8", "1", "2", "2", "9"])
    ax = norm.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "background"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("True", "Predicted")


def test_write_plots_writes_six_decodable_pngs(tmp_path, curves):
    _, c, names = curves
    rng = np.random.default_rng(2)
    confusion = rng.integers(0, 30, (9, 9)).astype(float)
    files = write_plots(tmp_path / "run", c, confusion, names)
    assert sorted(f.name for f in files) == sorted(
        ["PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png",
         "confusion_matrix_raw.png"])
    for f in files:
        with Image.open(f) as im:
            im.load()
            assert im.size == (MATRIX_PX if f.name.startswith("confusion") else CURVE_PX), f.name
            assert "Software" not in im.info
    assert files[-1].read_bytes() != files[-2].read_bytes()  # normalized vs raw


def test_identical_inputs_give_identical_bytes(tmp_path, curves):
    _, c, names = curves
    curve_names = [names[i] for i in c.class_ids]
    plot_pr_curve(c.px, c.py, c.ap, curve_names, tmp_path / "a.png")
    plot_pr_curve(c.px, c.py, c.ap, curve_names, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    ap = c.ap.copy()
    ap[0, 0] += 0.01  # one legend number changes: the bytes must too
    plot_pr_curve(c.px, c.py, ap, curve_names, tmp_path / "c.png")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_one_layout_pass_draws_what_the_layout_engine_draws(tmp_path, monkeypatch):
    """_save lays the figure out once and draws it once (savefig with a layout engine draws it twice) and encodes
    at zlib level 1: the pixels are the ones matplotlib's own tight-layout savefig gives, on a matrix with 80
    rotated names and on a curve figure."""
    import matplotlib.style
    from matplotlib.figure import Figure

    from detval.report.plots import DPI, _save

    draws = []
    figure_draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda fig, renderer: draws.append(fig) or figure_draw(fig, renderer))

    rng = np.random.default_rng(3)
    matrix = rng.poisson(0.3, (81, 81)).astype(float) + np.eye(81) * 20
    names = [f"class name {i}" for i in range(80)]
    px, y = np.linspace(0, 1, 1000), np.sort(rng.random((3, 1000)), 1)
    figures = {"matrix": lambda: confusion_matrix_figure(matrix, names, normalize=True),
               "curve": lambda: metric_curve_figure(px, y, names[:3], "F1")}
    for name, figure in figures.items():
        with matplotlib.style.context("default"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            figure().savefig(tmp_path / f"{name}_engine.png", dpi=DPI, format="png")
            draws.clear()
            _save(figure(), tmp_path / f"{name}_once.png")
            assert len(draws) == 1, name
        with Image.open(tmp_path / f"{name}_engine.png") as a, Image.open(tmp_path / f"{name}_once.png") as b:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_another_process_draws_the_same_bytes(tmp_path):
    # Rank 0 of any world size is a different process: its PNG must not depend on process state.
    script = (
        "import sys, numpy as np\n"
        "from detval.report.plots import plot_metric_curve\n"
        "px = np.linspace(0, 1, 1000)\n"
        "y = np.stack([px * (1 - px) * 4, px ** 2])\n"
        "plot_metric_curve(px, y, ['a', 'b'], sys.argv[1], 'Recall')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "child.png")], cwd=REPO, check=True)
    px = np.linspace(0, 1, 1000)
    plot_metric_curve(px, np.stack([px * (1 - px) * 4, px ** 2]), ["a", "b"], tmp_path / "here.png", "Recall")
    assert (tmp_path / "child.png").read_bytes() == (tmp_path / "here.png").read_bytes()


def test_plots_drawn_in_three_processes_are_the_bytes_of_one(tmp_path, curves):
    _, c, names = curves
    confusion = np.random.default_rng(3).integers(0, 30, (9, 9)).astype(float)
    one = write_plots(tmp_path / "one", c, confusion, names, processes=1)
    three = write_plots(tmp_path / "three", c, confusion, names, processes=3)
    assert [f.name for f in one] == [f.name for f in three]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, three))
