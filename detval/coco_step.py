"""The COCO part of a validation run (--save-json): YOLOv5's predictions JSON and COCO bbox metrics.

    coco_ground_truth (every rank, before inference)  ->  rank_coco_part (every rank: its own images evaluated;
    the compact per-image results regrouped by category, each rank accumulating its share of the categories)
    ->  finish_coco (rank 0: the JSON file, summarize, or a reference library on the JSON)

Which ground truth (as YOLOv5 v7.0 val.py where it has one):
- `--data instances.json --images DIR`: that file, image ids from it (matched by file name);
- data.yaml with `<path>/annotations/instances_val2017.json`: that file (val.py's anno_json), image ids from
  numeric file stems as val.py's save_one_json;
- otherwise the run's own YOLO labels, converted to COCO in memory (val.py has no such path: it fails there).
Only the run's images are evaluated (val.py restricts imgIds only for coco/val2017.txt; it evaluates every
image of the annotation file otherwise, which on a subset counts the other images' objects as missed).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from detval import dist
from detval.coco_format import (BACKENDS, COCO80_NAMES, COCO80_TO_91, CocoDetections, CocoGroundTruth,
                                coco_boxes_and_scores, image_id_from_stem, load_coco_gt, per_class_by_name,
                                save_detections_json, yolo_labels_to_coco_gt)
from detval.data import load_data_config, scan_images
from detval.data.coco_dataset import records_from_coco_json
from detval.data.scan import ImageRecord, exif_size_hw
from detval.errors import DetvalError
from detval.metrics.coco_eval import (CocoAccumulated, CocoParams, PerImageEval, accumulate, category_shares,
                                      evaluate_images, format_summary, join_categories, per_class_ap,
                                      select_categories, summarize)
from detval.results import Excluded

ANNOTATIONS_FILE = Path("annotations") / "instances_val2017.json"


def is_coco_json(data: str | Path) -> bool:
    """True when --data names a COCO instances file rather than a data.yaml."""
    return str(data).lower().endswith(".json")


# --- COCO JSON as validation input ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CocoSplit:
    """What engine.prepare takes from a data.yaml split, read from a COCO instances file and its image folder.

    records: usable images sorted by path (YOLOv5's file order), labels float32 [n, 5] (cls, cx, cy, w, h)
    normalized; names[i] / class_map[i]: name and COCO category id of class i (categories sorted by id)."""

    records: list[ImageRecord]
    excluded: list[Excluded]
    names: list[str]
    class_map: list[int]
    scan_summary: str


def read_coco_json_split(instances_json: str | Path, images_dir: str | Path | None) -> CocoSplit:
    """Read --data instances.json --images DIR. Each image's header is read (not decoded) and must be readable
    and of the JSON's size, else it is excluded: the labels are normalized by the JSON's size, the model sees the
    file's."""
    if not images_dir:
        raise DetvalError(f"--data {instances_json} is a COCO JSON: --images DIR (its image folder) is needed")
    images = records_from_coco_json(instances_json, images_dir)
    records, excluded = [], list(images.excluded)
    for rec in images.records:
        try:
            with Image.open(rec.path) as im:
                shape_hw = exif_size_hw(im)
        except Exception as e:  # noqa: BLE001 - any unreadable file is an excluded image, as in the YAML scan
            excluded.append(Excluded(str(rec.path), f"unreadable image ({type(e).__name__}: {e})"))
            continue
        if tuple(shape_hw) != tuple(rec.shape_hw):
            (h, w), (jh, jw) = shape_hw, rec.shape_hw
            excluded.append(Excluded(str(rec.path), f"image is {w}x{h} (w x h), {Path(instances_json).name} "
                                                    f"says {jw}x{jh}"))
            continue
        records.append(rec)
    if not records:
        why = f": {excluded[0].reason}" if excluded else ""
        raise DetvalError(f"{instances_json}: no usable image in {images_dir}{why}")
    n_labelled = sum(1 for r in records if len(r.labels))
    summary = (f"val: Scanning {instances_json} ({images_dir})... {n_labelled} images, "
               f"{len(records) - n_labelled} backgrounds, {len(excluded)} missing or corrupt")
    return CocoSplit(records, excluded, images.names, images.class_map, summary)


# --- ground truth ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CocoGt:
    """The run's COCO ground truth and how the run's images and classes map onto it.

    gt: the instances as arrays; source: what a reference backend reads (instances path, or the in-memory dict);
    record_ids: COCO image id of records[i] (the run's records, plan order), as the predictions JSON writes it;
    record_index: int64 [n_records] position of records[i] in gt.image_ids, -1 if gt lacks the image (its
    detections are written but not evaluated); class_map[c]: category id of class c; names: category id ->
    the name results.json uses; backend: detval, pycocotools or faster-coco-eval; note: what was chosen, said
    once with the summary."""

    gt: CocoGroundTruth
    source: str | dict
    record_ids: list
    record_index: np.ndarray
    class_map: list[int]
    names: dict[int, str]
    backend: str
    note: str = ""

    @property
    def params(self) -> CocoParams:
        return CocoParams.for_gt(self.gt)


def coco_class_map(names: Sequence[str], val_sources: Sequence[str | Path] = ()) -> tuple[list[int], bool]:
    """(class index -> category id, is COCO). COCO's 91-id map when a val source ends with coco/val2017.txt
    (val.py's is_coco) or when the names are COCO's 80 in order (detval's addition, so that coco128-style sets
    get COCO ids); else the identity, as val.py's list(range(1000))."""
    by_path = any(str(s).replace(os.sep, "/").endswith("coco/val2017.txt") for s in val_sources)
    if by_path or tuple(names) == COCO80_NAMES:
        return list(COCO80_TO_91), True
    return list(range(max(1000, len(names)))), False


def coco_ground_truth(data: str | Path, images: str | Path | None, records: Sequence[ImageRecord],
                      names: Sequence[str], single_cls: bool = False, backend: str = "detval") -> CocoGt:
    """The ground truth a --save-json run evaluates against (see the module docstring for the choice).

    data, images: cfg.data / cfg.images; records: the run's images in plan order (with labels: the in-memory
    GT is built from them); names: the dataset's class names. With single_cls the GT is the records' labels
    (all class 0) as one category, class_map[0]'s. Fails here, before any inference, on a bad annotation
    file, on two images that would share a COCO image id, or on a backend that is not installed."""
    _check_backend(backend)
    records = list(records)
    id_note = ""
    if is_coco_json(data):
        gt_file = load_coco_gt(data)
        class_map = [int(c) for c in gt_file.category_ids]
        by_name = _json_image_ids(data, images)
        record_ids = [by_name.get(_key(r.path), image_id_from_stem(Path(r.path).stem)) for r in records]
        anno = Path(data)
    else:
        data_cfg = load_data_config(data)
        class_map, is_coco = coco_class_map(names, data_cfg.val or [])
        if is_coco:
            id_note = "; category ids: COCO's 1..90 (" + (
                "the 80 COCO class names" if tuple(names) == COCO80_NAMES else "coco/val2017.txt") + ")"
        record_ids = [image_id_from_stem(Path(r.path).stem) for r in records]
        anno = data_cfg.root / ANNOTATIONS_FILE
        gt_file = load_coco_gt(anno) if anno.is_file() and not single_cls else None
    _check_unique_ids(records, record_ids)

    cat_names = {c: str(n) for c, n in zip(class_map, names)}
    if single_cls:  # labels zeroed here too: records from a raw-output cache keep their classes
        one = [ImageRecord(r.path, r.shape_hw, _class_zero(r.labels)) for r in records]
        gt_source = yolo_labels_to_coco_gt(_by_path(one), ["item"], class_map)
        gt, source, cat_names = load_coco_gt(gt_source), gt_source, {class_map[0]: "item"}
        note = f"COCO ground truth: the run's labels, one class (category id {class_map[0]})"
    elif gt_file is not None:
        gt, source = gt_file, str(anno)
        in_file = set(gt.category_ids.tolist())
        cat_names = {**gt.category_names, **{c: n for c, n in cat_names.items() if c in in_file}}
        note = f"COCO ground truth: {anno}"
    else:
        gt_source = yolo_labels_to_coco_gt(_by_path(records), list(names), class_map)
        gt, source = load_coco_gt(gt_source), gt_source
        note = f"COCO ground truth: the run's YOLO labels (no {anno})"
    note += id_note
    record_index = gt.image_index(record_ids)
    missing = int((record_index < 0).sum())
    if missing:
        note += f"; {missing} of the run's images are not in it and are left out of the COCO metrics"
    return CocoGt(gt, source, record_ids, record_index, class_map, cat_names, backend, note)


def records_with_labels(data: str | Path, images: str | Path | None, records: Sequence[ImageRecord],
                        nc: int) -> list[ImageRecord]:
    """records (e.g. a raw-output cache's manifest, which has no labels) with their labels read again from the
    dataset, same order: the in-memory COCO GT is built from labels. Fails if an image is no longer there."""
    if is_coco_json(data):
        found = read_coco_json_split(data, images).records
    else:
        found = scan_images([Path(r.path) for r in records], nc).records
    labels = {str(r.path): r.labels for r in found}
    gone = [str(r.path) for r in records if str(r.path) not in labels]
    if gone:
        raise DetvalError(f"--save-json: {len(gone)} images of the run are no longer usable in {data} "
                          f"(first: {gone[0]})")
    return [ImageRecord(r.path, r.shape_hw, labels[str(r.path)]) for r in records]


def _class_zero(labels: np.ndarray) -> np.ndarray:
    labels = np.array(labels, dtype=np.float32).reshape(-1, 5)
    labels[:, 0] = 0
    return labels


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise DetvalError(f"unknown --coco-backend {backend!r}; choose from {', '.join(BACKENDS)}")
    module = {"pycocotools": "pycocotools.cocoeval", "faster-coco-eval": "faster_coco_eval"}.get(backend)
    if module:
        try:
            __import__(module)
        except ImportError as e:
            raise DetvalError(f"--coco-backend {backend} needs its package ({e}); pip install {backend}") from None


def _json_image_ids(instances_json: str | Path, images_dir: str | Path | None) -> dict[str, object]:
    """Image file (as _key) -> image id, for images_dir / file_name as records_from_coco_json builds the paths."""
    data = json.loads(Path(instances_json).read_text())
    folder = Path(images_dir or ".")
    return {_key(folder / img["file_name"]): img["id"] for img in data.get("images", [])}


def _key(path: str | Path) -> str:
    # resolved, so that a record path spelled differently (relative, '..') still finds its image id
    return str(Path(path).resolve())


def _check_unique_ids(records: Sequence[ImageRecord], record_ids: list) -> None:
    seen: dict = {}
    for rec, i in zip(records, record_ids):
        if i in seen:
            raise DetvalError(f"--save-json: {seen[i]} and {rec.path} would both be COCO image id {i!r} "
                              "(ids come from file stems); rename one, or run without --save-json")
        seen[i] = rec.path


def _by_path(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Records in file order, so that the in-memory GT (and its annotation ids) does not depend on the batch plan."""
    return sorted(records, key=lambda r: str(r.path))


# --- detections --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CocoRows:
    """Detections as the predictions JSON holds them, one row per detection in the given image order.

    record [D] int64 (index into the run's records); category [D] int64; boxes [D, 4] float64 xywh pixels
    rounded to 3 decimals; scores [D] float64 rounded to 5: the floats json.load reads back from the file."""

    record: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def coco_rows(gt: CocoGt, image_ids: torch.Tensor, det_counts: torch.Tensor, det: dict[str, torch.Tensor]) -> CocoRows:
    """A RankOutput's detections (image_ids [n] record indices, det_counts [n], det boxes f32 [D, 4] xyxy native
    pixels, conf f32 [D], cls f32 [D]) as val.py's save_one_json numbers them."""
    boxes, scores = coco_boxes_and_scores(det["boxes"].cpu().numpy(), det["conf"].cpu().numpy())
    cls = det["cls"].cpu().numpy().astype(np.int64)
    record = np.repeat(image_ids.cpu().numpy().astype(np.int64), det_counts.cpu().numpy())
    return CocoRows(record, np.asarray(gt.class_map, dtype=np.int64)[cls], boxes, scores)


def predictions_json(gt: CocoGt, rows: CocoRows) -> list[dict]:
    """The results list val.py writes (same keys, key order and numbers), rows in the given order."""
    ids = gt.record_ids
    return [{"image_id": ids[r], "category_id": c, "bbox": b, "score": s}
            for r, c, b, s in zip(rows.record.tolist(), rows.category.tolist(), rows.boxes.tolist(),
                                  rows.scores.tolist())]


def predictions_json_path(run_dir: Path, weights: str | Path | None) -> Path:
    """<run_dir>/<weights stem>_predictions.json, as val.py names it."""
    return Path(run_dir) / f"{Path(weights).stem if weights else ''}_predictions.json"


# --- per rank ----------------------------------------------------------------------------------------------------

def evaluate_rank(gt: CocoGt, image_ids: torch.Tensor, det_counts: torch.Tensor,
                  det: dict[str, torch.Tensor]) -> PerImageEval:
    """COCOeval.evaluate on one rank's images (every image it ran, with or without detections); arguments as
    coco_rows. Images the GT lacks are skipped."""
    rows = coco_rows(gt, image_ids, det_counts, det)
    index = gt.record_index[rows.record]
    keep = index >= 0
    dets = CocoDetections("detval run", index[keep], rows.category[keep], rows.boxes[keep], rows.scores[keep])
    mine = gt.record_index[image_ids.cpu().numpy().astype(np.int64)]
    return evaluate_images(gt.gt, dets, gt.gt.image_ids[mine[mine >= 0]].tolist(), gt.params)


def exchange_parts(ctx: dist.DistContext, parts: list[PerImageEval]) -> PerImageEval:
    """All-to-all of per-image results: parts[r] goes to rank r; returns what this rank received, merged (as
    `merge`: rows are keyed by image, and sorting by image is exactly merge). Collective.

    Two ragged exchanges keyed by image: the GT groups and the detection rows."""
    packed = [_as_ragged(part) for part in parts]
    ids, g_rows, g_n = dist.exchange_ragged(ctx, [p[0] for p in packed])
    _, d_rows, d_n = dist.exchange_ragged(ctx, [p[1] for p in packed])
    ids_np = ids.numpy()
    A, T = parts[0].det_status.shape[1:]
    return PerImageEval(
        img_index=ids_np, gt_img=np.repeat(ids_np, g_n.numpy()), gt_cat=g_rows["cat"].numpy(),
        gt_count=g_rows["count"].numpy().reshape(-1, parts[0].gt_count.shape[1]),
        det_img=np.repeat(ids_np, d_n.numpy()), det_cat=d_rows["cat"].numpy(), det_rank=d_rows["rank"].numpy(),
        det_score=d_rows["score"].numpy(), det_status=d_rows["status"].numpy().reshape(-1, A, T))


def _as_ragged(part: PerImageEval) -> tuple:
    """(GT groups, detection rows) of part, each as (image ids, rows, rows per image) for dist's ragged gathers."""
    img = torch.from_numpy(part.img_index.astype(np.int64))
    gt = (img, {"cat": torch.from_numpy(part.gt_cat), "count": torch.from_numpy(part.gt_count)},
          _rows_per_image(part.img_index, part.gt_img))
    det = (img, {"cat": torch.from_numpy(part.det_cat), "rank": torch.from_numpy(part.det_rank),
                 "score": torch.from_numpy(part.det_score), "status": torch.from_numpy(part.det_status)},
           _rows_per_image(part.img_index, part.det_img))
    return gt, det


def _rows_per_image(img_index: np.ndarray, row_img: np.ndarray) -> torch.Tensor:
    """Rows per image: row_img [N] sorted, each one of img_index [I] (ascending) -> int64 [I]."""
    counts = np.searchsorted(row_img, img_index, "right") - np.searchsorted(row_img, img_index, "left")
    return torch.from_numpy(counts.astype(np.int64))


def rank_coco_part(ctx: dist.DistContext, gt: CocoGt | None, out) -> CocoAccumulated | None:
    """Every rank, before the run's results are gathered: COCOeval's evaluate and accumulate, spread over the ranks
    (out: this rank's engine.RankOutput). Each rank evaluates its own images; the per-image results of every
    world_size-th category go to one rank, which accumulates those categories; rank 0 joins the small accumulated
    arrays. Returns them on rank 0; None on other ranks, without a GT, or when a reference backend will evaluate
    the JSON instead (all ranks know cfg.coco_backend, so all skip the collectives together)."""
    if gt is None or gt.backend != "detval":
        return None
    part = evaluate_rank(gt, out.image_ids, out.det_counts, out.det)
    params = gt.params
    if not ctx.is_distributed:
        return accumulate(part, params)
    shares = category_shares(params, ctx.world_size)
    mine = exchange_parts(ctx, [select_categories(part, share.cat_ids) for share in shares])
    accumulated = dist.gather_objects(ctx, accumulate(mine, shares[ctx.rank]))
    return join_categories(params, accumulated) if ctx.is_main else None


# --- rank 0 ------------------------------------------------------------------------------------------------------

def finish_coco(gt: CocoGt, merged, acc: CocoAccumulated | None, pred_json: Path,
                say: Callable[..., None] = print) -> dict | None:
    """Rank 0: write the predictions JSON (merged: the gathered engine.RankOutput, plan order, as val.py's jdict),
    print and return COCO's metrics as results.json's "coco": {"stats": [12], "per_class_ap": {name: AP}}.

    As val.py, nothing is written or evaluated when the run has no detection at all (returns None). acc: what
    rank_coco_part returned on rank 0 (backend detval); a reference backend reads the JSON's rows instead."""
    rows = coco_rows(gt, merged.image_ids, merged.det_counts, merged.det)
    if not len(rows.scores):
        return None
    jdict = predictions_json(gt, rows)
    label = "COCO (detval)" if gt.backend == "detval" else gt.backend
    say(f"\nEvaluating {label} mAP... saving {pred_json}...")
    save_detections_json(pred_json, jdict)
    if gt.note:
        say(gt.note)
    if gt.backend == "detval":
        if acc is None:
            raise ValueError("finish_coco: backend detval needs rank_coco_part's result")
        stats, per_class = summarize(acc), per_class_ap(acc)
    else:
        from detval.metrics.coco_reference import reference_evaluate
        in_gt = gt.record_index[rows.record] >= 0
        evaluated = [gt.record_ids[i] for i in merged.image_ids.tolist() if gt.record_index[i] >= 0]
        if not in_gt.any():
            say("WARNING: no detection is on an image of the COCO ground truth; COCO metrics skipped")
            return None
        result = reference_evaluate(gt.backend, gt.source, [d for d, k in zip(jdict, in_gt.tolist()) if k],
                                    img_ids=evaluated)
        stats, per_class = result.stats, result.per_class_ap
    say(format_summary(stats))
    return {"stats": [float(x) for x in stats], "per_class_ap": per_class_by_name(per_class, gt.names)}
