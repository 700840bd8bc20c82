"""Synthetic COCO ground truth + detections that exercise every corner of COCOeval (tests and benchmarks).

make_coco_set(SynthSpec(...)) -> (gt dict in COCO instances form, detections list in COCO results form).
coco128_as_coco() is its real-data counterpart: coco128's labels and the reference yolov5n predictions.
What it puts in: sparse, shuffled image ids (or string ids); images without GT that still get detections;
a category without GT and one without detections; crowd GTs; `area` unlike the box area (as polygon areas);
exact duplicate GTs (IoU ties); tiny (< 1 px) and image-sized boxes; jittered true positives, duplicates,
wrong-class and background detections; tied scores; one (image, category) with more than 100 detections.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SynthSpec:
    n_images: int = 40
    n_cats: int = 6
    gt_per_image: float = 7.3        # Poisson mean
    dets_per_image: int = 40         # background detections fill each image up to this
    crowd_frac: float = 0.05
    empty_image_frac: float = 0.1
    duplicate_gt_frac: float = 0.03
    score_decimals: int = 2          # 2 gives many tied scores; YOLOv5 writes 5
    crowded_dets: int = 150          # extra detections on one (image, category) (> 100)
    bg_on_present: float = 0.5       # share of background detections that take a class present in the image
    tie_scenes: int = 3              # images with a detection at exactly equal IoU to two GTs
    string_ids: bool = False
    gt_id_zero: bool = False         # give one GT the id 0 (pycocotools then never counts its matches)
    seed: int = 0


def make_coco_set(spec: SynthSpec = SynthSpec()) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(spec.seed)
    n_img = spec.n_images
    cat_ids = np.sort(rng.choice(np.arange(1, 91), size=spec.n_cats, replace=False))
    gt_cats, det_cats = cat_ids[1:], np.r_[cat_ids[:1], cat_ids[2:]]  # cat_ids[0]: no GT; cat_ids[1]: no dets
    img_ids = np.sort(rng.choice(np.arange(1, 10 * n_img + 10), size=n_img, replace=False))
    widths = rng.integers(200, 641, n_img)
    heights = rng.integers(200, 641, n_img)

    n_gt = rng.poisson(spec.gt_per_image, n_img)
    n_gt[rng.random(n_img) < spec.empty_image_frac] = 0
    n_gt[0] = max(n_gt[0], 3)
    g_img = np.repeat(np.arange(n_img), n_gt)
    g_cat = rng.choice(gt_cats, len(g_img))
    W, H = widths[g_img], heights[g_img]
    size = np.exp(rng.uniform(np.log(2), np.log(0.9 * np.minimum(W, H)), len(g_img)))
    aspect = np.exp(rng.normal(0, 0.4, len(g_img)))
    gw, gh = np.minimum(size * aspect, W), np.minimum(size / aspect, H)
    tiny = rng.random(len(g_img)) < 0.03
    gw[tiny], gh[tiny] = rng.uniform(0.2, 1.5, (2, tiny.sum()))
    huge = rng.random(len(g_img)) < 0.02
    gw[huge], gh[huge] = W[huge], H[huge]
    gx, gy = rng.uniform(0, 1, len(g_img)) * (W - gw), rng.uniform(0, 1, len(g_img)) * (H - gh)
    g_box = np.round(np.stack([gx, gy, gw, gh], 1), 2)
    g_crowd = rng.random(len(g_img)) < spec.crowd_frac
    dup = np.flatnonzero(rng.random(len(g_img)) < spec.duplicate_gt_frac)
    g_img, g_cat, g_box, g_crowd = (np.r_[g_img, g_img[dup]], np.r_[g_cat, g_cat[dup]],
                                    np.r_[g_box, g_box[dup]], np.r_[g_crowd, np.zeros(len(dup), bool)])
    g_area = np.round(g_box[:, 2] * g_box[:, 3] * rng.uniform(0.4, 1.05, len(g_img)), 2)
    # tie scenes: GTs [x, y, 10s, 10s] and [x + 2s, y, 10s, 10s], a first detection halfway (the same IoU with
    # both, exactly: powers of two keep the arithmetic exact) and a second one on the first GT. Which GT the tie
    # goes to decides whether the second detection matches at high IoU thresholds.
    scenes = np.arange(1, 1 + min(spec.tie_scenes, n_img - 1))
    s = 2.0 ** rng.integers(0, 3, len(scenes))
    x, y = rng.integers(0, 50, (2, len(scenes))).astype(float)
    t_cat = rng.choice(gt_cats[gt_cats != cat_ids[1]] if len(gt_cats) > 1 else gt_cats, len(scenes))
    t_gt = np.concatenate([np.stack([x, y, 10 * s, 10 * s], 1), np.stack([x + 2 * s, y, 10 * s, 10 * s], 1)])
    t_det = np.concatenate([np.stack([x + s, y, 10 * s, 10 * s], 1), np.stack([x, y, 10 * s, 10 * s], 1)])
    g_img, g_cat, g_box = np.r_[g_img, scenes, scenes], np.r_[g_cat, t_cat, t_cat], np.r_[g_box, t_gt]
    g_crowd, g_area = np.r_[g_crowd, np.zeros(2 * len(scenes), bool)], np.r_[g_area, t_gt[:, 2] * t_gt[:, 3]]
    g_ids = rng.permutation(np.arange(1, len(g_img) + 1) * 3)
    if spec.gt_id_zero:
        g_ids[np.flatnonzero(~g_crowd)[0]] = 0

    # detections near GTs: jitter sets the IoU, some take a wrong class, crowds attract several
    per_gt = rng.poisson(1.3, len(g_img)) + 2 * g_crowd
    src = np.repeat(np.arange(len(g_img)), per_gt)
    sigma = rng.uniform(0.01, 0.35, len(src))[:, None]
    b = g_box[src]
    cx = b[:, 0] + b[:, 2] / 2 + rng.normal(0, 1, len(src)) * sigma[:, 0] * b[:, 2]
    cy = b[:, 1] + b[:, 3] / 2 + rng.normal(0, 1, len(src)) * sigma[:, 0] * b[:, 3]
    dw = b[:, 2] * np.exp(rng.normal(0, 1, len(src)) * sigma[:, 0])
    dh = b[:, 3] * np.exp(rng.normal(0, 1, len(src)) * sigma[:, 0])
    d_img, d_box = g_img[src], np.stack([cx - dw / 2, cy - dh / 2, dw, dh], 1)
    d_cat = np.where(rng.random(len(src)) < 0.9, g_cat[src], rng.choice(det_cats, len(src)))
    d_cat = np.where(d_cat == cat_ids[1], cat_ids[0], d_cat)
    d_score = rng.uniform(0.2, 1.0, len(src)) ** 0.5

    # one (image, category) with more detections than COCO's 100 budget
    c0 = np.flatnonzero(g_img == 0)[0]
    k = spec.crowded_dets
    cb = g_box[c0] + rng.normal(0, 1, (k, 4)) * np.r_[0.2 * g_box[c0, 2:], 0.1 * g_box[c0, 2:]]
    d_img = np.r_[d_img, np.zeros(k, np.int64)]
    d_box = np.r_[d_box, cb]
    d_cat = np.r_[d_cat, np.full(k, g_cat[c0] if g_cat[c0] != cat_ids[1] else cat_ids[0])]
    d_score = np.r_[d_score, rng.uniform(0, 1, k)]

    d_img, d_box, d_cat = np.r_[d_img, scenes, scenes], np.r_[d_box, t_det], np.r_[d_cat, t_cat, t_cat]
    d_score = np.r_[d_score, np.full(len(scenes), 0.97), np.full(len(scenes), 0.83)]

    # background detections, on every image including those without GT
    n_bg = np.maximum(spec.dets_per_image - np.bincount(d_img, minlength=n_img), 0)
    bg_img = np.repeat(np.arange(n_img), n_bg)
    W, H = widths[bg_img], heights[bg_img]
    bw = np.exp(rng.uniform(np.log(1), np.log(W), len(bg_img)))
    bh = np.exp(rng.uniform(np.log(1), np.log(H), len(bg_img)))
    bg_box = np.stack([rng.uniform(0, 1, len(bg_img)) * (W - bw), rng.uniform(0, 1, len(bg_img)) * (H - bh),
                       bw, bh], 1)
    d_img = np.r_[d_img, bg_img]
    d_box = np.round(np.r_[d_box, bg_box], 3)
    # like a real detector, much of the background lands on the classes that are in the image
    bg_cat = rng.choice(det_cats, len(bg_img))
    first_gt = np.searchsorted(g_img[:n_gt.sum()], np.arange(n_img))   # the original GTs are sorted by image
    has_gt = n_gt[bg_img] > 0
    present = g_cat[first_gt[bg_img] + (rng.random(len(bg_img)) * np.maximum(n_gt[bg_img], 1)).astype(np.int64)
                    .clip(max=n_gt.sum() - 1)]
    on_present = has_gt & (rng.random(len(bg_img)) < spec.bg_on_present) & (present != cat_ids[1])
    bg_cat[on_present] = present[on_present]
    d_cat = np.r_[d_cat, bg_cat]
    d_score = np.round(np.r_[d_score, rng.uniform(0.001, 0.7, len(bg_img)) ** 2], spec.score_decimals)

    ids = [f"img_{i:06d}" for i in img_ids] if spec.string_ids else img_ids.tolist()
    images = [{"id": ids[i], "file_name": f"{ids[i]}.jpg", "width": int(widths[i]), "height": int(heights[i])}
              for i in rng.permutation(n_img)]
    g_order = rng.permutation(len(g_img))
    anns = [{"id": int(g_ids[j]), "image_id": ids[g_img[j]], "category_id": int(g_cat[j]),
             "bbox": g_box[j].tolist(), "area": float(g_area[j]), "iscrowd": int(g_crowd[j])} for j in g_order]
    categories = [{"id": int(c), "name": f"class_{c}"} for c in cat_ids]
    d_order = rng.permutation(len(d_img))
    d_img_l, d_cat_l, d_box_l, d_score_l = (d_img[d_order].tolist(), d_cat[d_order].tolist(),
                                            d_box[d_order].tolist(), d_score[d_order].tolist())
    dets = [{"image_id": ids[i], "category_id": c, "bbox": bb, "score": s}
            for i, c, bb, s in zip(d_img_l, d_cat_l, d_box_l, d_score_l)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


@dataclass
class LabelRecord:
    """The fields of detval.data.scan.ImageRecord that COCO conversion reads."""

    path: Path
    shape_hw: tuple[int, int]
    labels: np.ndarray


def coco128_as_coco() -> tuple[dict, list[dict], list[LabelRecord]]:
    """(COCO GT from coco128's YOLO labels, the reference yolov5n predictions as YOLOv5's JSON export would
    write them, the label records). Image sizes from the JPEG headers. Fails if the shared data is missing."""
    from PIL import Image

    from detval.coco.format import COCO80_TO_91, yolo_detections_to_coco, yolo_labels_to_coco_gt
    from detval.paths import shared_data_dir

    root = shared_data_dir()
    images = sorted((root / "coco128" / "images" / "train2017").glob("*.jpg"))
    pred_dir = root / "reference" / "yolov5n-coco128-default" / "predictions"
    assert len(images) == 128 and pred_dir.is_dir(), f"coco128 data missing under {root}"
    recs = []
    for path in images:
        w, h = Image.open(path).size
        lab = root / "coco128" / "labels" / "train2017" / (path.stem + ".txt")
        labels = np.loadtxt(lab, dtype=np.float32, ndmin=2) if lab.exists() else np.zeros((0, 5), np.float32)
        recs.append(LabelRecord(path, (h, w), labels))
    gt = yolo_labels_to_coco_gt(recs, [str(i) for i in range(80)], COCO80_TO_91)
    dets = []
    for r in recs:
        p = np.loadtxt(pred_dir / (r.path.stem + ".txt"), dtype=np.float32, ndmin=2)   # cls cx cy w h conf
        h, w = r.shape_hw
        xyxy = np.concatenate([p[:, 1:3] - p[:, 3:5] / 2, p[:, 1:3] + p[:, 3:5] / 2], 1) * np.array([w, h, w, h],
                                                                                                     np.float32)
        dets += yolo_detections_to_coco(r.path.stem, xyxy, p[:, 5], p[:, 0], COCO80_TO_91)
    return gt, dets, recs
