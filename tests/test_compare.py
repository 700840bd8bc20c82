"""report/compare.py and `detval compare`: deltas, flags, one-run classes, settings warnings, CLI."""
import json

import pytest

from detval.cli import main
from detval.report.compare import compare_runs, comparison_to_json, format_comparison
from detval.results import ClassResult, ValResult, write_results_json

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane"]


def _run(per_class: dict[int, tuple[float, float]], overall: tuple[float, float, float, float],
         **settings) -> dict:
    """A results.json dict; per_class maps class id -> (mAP50, mAP50-95)."""
    rows = [ClassResult(c, NAMES[c], 10, 20 + c, 0.5, 0.5, m50, m) for c, (m50, m) in sorted(per_class.items())]
    result = ValResult(images=128, instances=sum(r.instances for r in rows), p=overall[0], r=overall[1],
                       map50=overall[2], map=overall[3], maps=[0.0] * 5, per_class=rows,
                       speed_ms={"inference": 1.0}, names=NAMES)
    base = {"data": "coco128.yaml", "imgsz": 640, "conf_thres": 0.001, "project": "runs/val", "name": "exp"}
    return result.to_json(settings=base | settings, version="0.1.0", weights={"path": "w.pt", "sha256": "ab" * 32})


# Known differences, b - a: class 0 mAP50-95 +0.05; class 1 -0.002 (below the 0.01 threshold);
# class 2 mAP50 -0.2 and mAP50-95 -0.1; class 3 only in a; class 4 only in b.
RUN_A = _run({0: (0.6, 0.4), 1: (0.5, 0.3), 2: (0.9, 0.7), 3: (0.2, 0.1)}, (0.60, 0.50, 0.56, 0.36))
RUN_B = _run({0: (0.6, 0.45), 1: (0.5, 0.298), 2: (0.7, 0.6), 4: (0.3, 0.2)}, (0.62, 0.48, 0.56, 0.37),
             imgsz=320, name="exp2")


def test_overall_deltas_are_b_minus_a():
    c = compare_runs(RUN_A, RUN_B)
    deltas = {m.metric: m.delta for m in c.overall}
    assert deltas["P"] == pytest.approx(0.02)
    assert deltas["R"] == pytest.approx(-0.02)
    assert deltas["mAP50"] == 0.0
    assert deltas["mAP50-95"] == pytest.approx(0.01)


def test_per_class_sorted_by_largest_change_and_flagged():
    c = compare_runs(RUN_A, RUN_B, threshold=0.01)
    assert [d.class_id for d in c.per_class] == [2, 0, 1]
    by_id = {d.class_id: d for d in c.per_class}
    assert by_id[2].map50_delta == pytest.approx(-0.2) and by_id[2].map_delta == pytest.approx(-0.1)
    assert by_id[0].map_delta == pytest.approx(0.05) and by_id[0].map50_delta == 0.0
    assert by_id[1].map_delta == pytest.approx(-0.002)
    assert (by_id[2].instances_a, by_id[2].instances_b) == (22, 22)
    assert [d.class_id for d in c.flagged] == [2, 0]
    assert [d.class_id for d in compare_runs(RUN_A, RUN_B, threshold=0.001).flagged] == [2, 0, 1]
    assert compare_runs(RUN_A, RUN_B, threshold=0.5).flagged == []


def test_classes_in_one_run_only_are_listed_apart():
    c = compare_runs(RUN_A, RUN_B)
    assert [(o.class_id, o.name, o.map) for o in c.only_in_a] == [(3, "motorcycle", 0.1)]
    assert [(o.class_id, o.name, o.map50) for o in c.only_in_b] == [(4, "airplane", 0.3)]
    assert any("one run only" in w for w in c.warnings)


def test_differing_settings_are_listed_output_location_is_not():
    c = compare_runs(RUN_A, RUN_B)
    assert [(s.key, s.a, s.b) for s in c.settings_diff] == [("imgsz", 640, 320)]  # name differs too: ignored
    assert any("imgsz" in w for w in c.warnings)


def test_a_run_against_itself_changes_nothing():
    c = compare_runs(RUN_A, RUN_A)
    assert all(m.delta == 0 for m in c.overall)
    assert c.flagged == [] and c.only_in_a == [] and c.only_in_b == []
    assert c.settings_diff == [] and c.warnings == []


def test_table_shows_signs_flags_and_warnings():
    text = format_comparison(compare_runs(RUN_A, RUN_B, labels=("runs/val/exp", "runs/val/exp2")))
    assert "runs/val/exp2" in text
    assert "+0.0200" in text and "-0.0200" in text  # P, R
    lines = text.splitlines()
    car = next(ln for ln in lines if " car " in ln)
    assert car.startswith("*") and "-0.2000" in car and "-0.1000" in car
    bicycle = next(ln for ln in lines if " bicycle " in ln)
    assert not bicycle.startswith("*") and "-0.0020" in bicycle
    assert "only in a:" in text and "motorcycle" in text and "only in b:" in text and "airplane" in text
    assert "imgsz: 640 -> 320" in text
    top1 = format_comparison(compare_runs(RUN_A, RUN_B), top=1)
    assert " car " in top1 and " bicycle " not in top1 and "2 more classes" in top1


def test_json_form_round_trips():
    j = json.loads(json.dumps(comparison_to_json(compare_runs(RUN_A, RUN_B))))
    assert [r["class_id"] for r in j["flagged"]] == [2, 0]
    assert j["overall"][3]["metric"] == "mAP50-95"
    assert j["settings_diff"] == [{"key": "imgsz", "a": 640, "b": 320}]


def _cli(argv: list[str]) -> int:
    return main(argv)


@pytest.fixture
def run_dirs(tmp_path):
    for name, data in (("a", RUN_A), ("b", RUN_B)):
        (tmp_path / name).mkdir()
        write_results_json(tmp_path / name / "results.json", data)
    return tmp_path / "a", tmp_path / "b"


def test_cli_json(run_dirs, capsys):
    a, b = run_dirs
    assert _cli(["compare", str(a), str(b), "--json", "--threshold", "0.06"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out["flagged"]] == ["car"]
    assert out["per_class"][0]["map50_delta"] == pytest.approx(-0.2)
    assert out["label_b"] == str(b)


def test_cli_table_top(run_dirs, capsys):
    a, b = run_dirs
    assert _cli(["compare", str(a), str(b), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert " car " in out and " person " in out and " bicycle " not in out


def test_cli_missing_results_is_an_error(run_dirs, tmp_path, capsys):
    a, _ = run_dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli(["compare", str(a), str(empty)]) == 2
    err = capsys.readouterr().err
    assert "results.json" in err and str(empty) in err
    assert _cli(["compare", str(tmp_path / "nowhere"), str(a)]) == 2
