"""Run-to-run comparison of two results.json dicts: what moved, by how much, and whether the runs are comparable.

Deltas are always b - a. Classes are matched by class id; a class with labels in only one run is listed apart
rather than compared against zero.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

OVERALL_METRICS = ("P", "R", "mAP50", "mAP50-95")
# ValConfig settings that cannot change a metric: where output goes, what else gets saved, how the work is
# spread over processes (detval gives the same numbers for any world size and schedule). Every other setting that
# differs (data, imgsz, thresholds, batch size -- it sets the rect letterbox shapes --, half, device, ...) is
# reported as a reason the runs may not be comparable. The model (weights, cfg) is what a comparison usually
# varies: the report's header names it instead.
OUTPUT_ONLY_SETTINGS = frozenset({"project", "name", "exist_ok", "verbose", "quiet", "plots", "save_txt",
                                  "save_conf", "save_json", "workers", "threads", "nproc", "dp", "schedule",
                                  "weights", "cfg", "save_raw", "cache", "cache_dir", "coco_backend"})


@dataclass(frozen=True)
class MetricDelta:
    """One overall metric in both runs."""

    metric: str
    a: float
    b: float
    delta: float


@dataclass(frozen=True)
class ClassDelta:
    """One class present in both runs."""

    class_id: int
    name: str
    instances_a: int
    instances_b: int
    map50_a: float
    map50_b: float
    map50_delta: float
    map_a: float  # mAP50-95
    map_b: float
    map_delta: float


@dataclass(frozen=True)
class ClassOnly:
    """A class with labels in one run only."""

    class_id: int
    name: str
    instances: int
    map50: float
    map: float  # mAP50-95


@dataclass(frozen=True)
class SettingDiff:
    """A setting whose value differs between the runs."""

    key: str
    a: object
    b: object


@dataclass
class Comparison:
    """Everything `detval compare` reports. per_class is sorted by |map_delta|, largest first."""

    label_a: str
    label_b: str
    threshold: float
    overall: list[MetricDelta]
    per_class: list[ClassDelta]
    flagged: list[ClassDelta]  # |mAP50 delta| or |mAP50-95 delta| > threshold, same order as per_class
    only_in_a: list[ClassOnly]
    only_in_b: list[ClassOnly]
    settings_diff: list[SettingDiff]
    images: tuple[int, int]
    instances: tuple[int, int]
    weights: tuple[dict, dict]
    warnings: list[str] = field(default_factory=list)


def _differs(x: object, y: object) -> bool:
    # NaN != NaN would flag every NaN setting as changed.
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return False
    return x != y


def diff_settings(a: dict, b: dict, ignore: frozenset[str] = OUTPUT_ONLY_SETTINGS) -> list[SettingDiff]:
    """Settings (results["settings"]) that differ between two runs, by key; a key missing on one side is None."""
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    return [SettingDiff(k, sa.get(k), sb.get(k)) for k in sorted((set(sa) | set(sb)) - ignore)
            if _differs(sa.get(k), sb.get(k))]


def _class_only(row: dict) -> ClassOnly:
    return ClassOnly(row["class"], row["name"], row["instances"], row["mAP50"], row["mAP50-95"])


def compare_runs(a: dict, b: dict, threshold: float = 0.01, *, labels: tuple[str, str] = ("a", "b"),
                 ignore_settings: frozenset[str] = OUTPUT_ONLY_SETTINGS) -> Comparison:
    """Compare two results.json dicts, run a the baseline.

    threshold: in AP units (0.01 = 1 point); a class is flagged when its mAP50 or mAP50-95 moves by more.
    labels: what the report calls the runs (their folders, say). ignore_settings: keys not worth a warning.
    """
    overall = [MetricDelta(m, a["metrics"][m], b["metrics"][m], b["metrics"][m] - a["metrics"][m])
               for m in OVERALL_METRICS]
    rows_a = {r["class"]: r for r in a["per_class"]}
    rows_b = {r["class"]: r for r in b["per_class"]}
    warnings: list[str] = []

    per_class = []
    for cid in sorted(rows_a.keys() & rows_b.keys()):
        ra, rb = rows_a[cid], rows_b[cid]
        if ra["name"] != rb["name"]:
            warnings.append(f"class {cid} is '{ra['name']}' in run a but '{rb['name']}' in run b")
        per_class.append(ClassDelta(
            class_id=cid, name=rb["name"], instances_a=ra["instances"], instances_b=rb["instances"],
            map50_a=ra["mAP50"], map50_b=rb["mAP50"], map50_delta=rb["mAP50"] - ra["mAP50"],
            map_a=ra["mAP50-95"], map_b=rb["mAP50-95"], map_delta=rb["mAP50-95"] - ra["mAP50-95"]))
    # Stable sort on class id first, so equal changes keep id order on every machine.
    per_class.sort(key=lambda c: -abs(c.map_delta))
    flagged = [c for c in per_class if abs(c.map50_delta) > threshold or abs(c.map_delta) > threshold]

    only_in_a = [_class_only(rows_a[c]) for c in sorted(rows_a.keys() - rows_b.keys())]
    only_in_b = [_class_only(rows_b[c]) for c in sorted(rows_b.keys() - rows_a.keys())]

    settings_diff = diff_settings(a, b, ignore_settings)
    if settings_diff:
        warnings.append("the runs' settings differ (" + ", ".join(d.key for d in settings_diff)
                        + "): differences may come from the settings, not the model")
    images, instances = (a["images"], b["images"]), (a["instances"], b["instances"])
    if images[0] != images[1] or instances[0] != instances[1]:
        warnings.append(f"the runs saw different data: {images[0]} vs {images[1]} images, "
                        f"{instances[0]} vs {instances[1]} instances")
    if only_in_a or only_in_b:
        warnings.append(f"{len(only_in_a) + len(only_in_b)} classes have labels in one run only")

    return Comparison(label_a=labels[0], label_b=labels[1], threshold=threshold, overall=overall,
                      per_class=per_class, flagged=flagged, only_in_a=only_in_a, only_in_b=only_in_b,
                      settings_diff=settings_diff, images=images, instances=instances,
                      weights=(a.get("weights") or {}, b.get("weights") or {}), warnings=warnings)


def comparison_to_json(c: Comparison) -> dict:
    """A JSON-ready dict of the comparison (full-precision floats, all per-class rows)."""
    return asdict(c) | {"images": list(c.images), "instances": list(c.instances), "weights": list(c.weights)}


def _run_line(side: str, label: str, weights: dict) -> str:
    sha = weights.get("sha256") or ""
    return f"{side}: {label}  weights {weights.get('path', '?')}" + (f" (sha256 {sha[:12]})" if sha else "")


def format_comparison(c: Comparison, top: int | None = None) -> str:
    """A readable report: overall deltas, the per-class table (the `top` largest mAP50-95 changes, all when
    None), one-run-only classes and warnings. Deltas carry their sign (+0.0123); '*' marks flagged classes."""
    lines = [_run_line("a", c.label_a, c.weights[0]), _run_line("b", c.label_b, c.weights[1]), ""]
    lines.append(f"{'':<10}{'a':>10}{'b':>10}{'b - a':>10}")
    for m in c.overall:
        lines.append(f"{m.metric:<10}{m.a:>10.4f}{m.b:>10.4f}{m.delta:>+10.4f}")

    rows = c.per_class if top is None else c.per_class[:top]
    flagged = {d.class_id for d in c.flagged}
    lines += ["", f"per class, largest mAP50-95 change first; * moved by more than {c.threshold:g} "
                  f"({len(c.flagged)} of {len(c.per_class)}):"]
    width = max([len("class")] + [len(d.name) for d in rows])
    lines.append(f"  {'class':<{width}} {'inst a':>7} {'inst b':>7} {'mAP50 a':>8} {'mAP50 b':>8} {'delta':>8}"
                 f" {'50-95 a':>8} {'50-95 b':>8} {'delta':>8}")
    for d in rows:
        mark = "*" if d.class_id in flagged else " "
        lines.append(f"{mark} {d.name:<{width}} {d.instances_a:>7} {d.instances_b:>7} {d.map50_a:>8.4f} "
                     f"{d.map50_b:>8.4f} {d.map50_delta:>+8.4f} {d.map_a:>8.4f} {d.map_b:>8.4f} "
                     f"{d.map_delta:>+8.4f}")
    if len(rows) < len(c.per_class):
        lines.append(f"  ... {len(c.per_class) - len(rows)} more classes")

    for side, only in (("a", c.only_in_a), ("b", c.only_in_b)):
        if only:
            lines += ["", f"only in {side}:"]
            lines += [f"  {o.name} (class {o.class_id}, {o.instances} instances): "
                      f"mAP50 {o.map50:.4f}, mAP50-95 {o.map:.4f}" for o in only]

    if c.settings_diff:
        lines += ["", "settings that differ:"]
        lines += [f"  {s.key}: {s.a!r} -> {s.b!r}" for s in c.settings_diff]
    if c.warnings:
        lines += [""] + [f"WARNING: {w}" for w in c.warnings]
    return "\n".join(lines)
