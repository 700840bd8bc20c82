"""COCO bbox evaluation with pycocotools' exact semantics (same floats), vectorized with numpy.

The phases are pycocotools' own, each a pure function:
    evaluate_images(gt, dets, img_ids, params) -> PerImageEval    per (image, category): who matched what
    merge([PerImageEval, ...]) -> PerImageEval                    parts from disjoint image sets, e.g. from ranks
    accumulate(per_image, params) -> CocoAccumulated              precision/recall/scores [T, R, K, A, M]
    summarize(accumulated) -> stats [12]                          the 12 numbers COCOeval.summarize prints
accumulate_images() runs the first and third on a compact form (and over forked processes by category);
coco_evaluate() runs them all. Boxes are COCO xywh in pixels (see detval.coco.format).

Parity notes (each reproduces pycocotools 2.0.x, cocoeval.py / maskApi.c):
- IoU is maskApi's bbIou; a crowd GT's union is the detection's area and a crowd GT can match many detections.
- A GT is ignored if it is a crowd or its `area` field lies outside the area range (ends inclusive); a GT
  `ignore` field has no effect because pycocotools overwrites it with iscrowd.
- Detections per (image, category) are ranked by score with a stable sort over file order; only the top
  max(max_dets) take part.
- The greedy match of one detection takes, among still-free GTs (crowds are never used up) with IoU >=
  min(t, 1 - 1e-10), the last one of highest IoU among non-ignored GTs if there is any, else among ignored ones.
- pycocotools records a match by the GT's id, so a detection matched to a GT whose id is 0 counts as unmatched.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from detval.coco.format import CocoDetections, CocoGroundTruth
from detval.forked import fork_map

# det_status codes
FP, TP, IGNORED = 0, 1, 2

AREA_LABELS = ("all", "small", "medium", "large")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# (is AP, IoU threshold or None for all, area label, index into max_dets) per stat, as COCOeval._summarizeDets.
_STAT_SPECS = (
    (True, None, "all", 2), (True, .5, "all", 2), (True, .75, "all", 2),
    (True, None, "small", 2), (True, None, "medium", 2), (True, None, "large", 2),
    (False, None, "all", 0), (False, None, "all", 1), (False, None, "all", 2),
    (False, None, "small", 2), (False, None, "medium", 2), (False, None, "large", 2),
)


def _default_iou_thrs() -> np.ndarray:
    # linspace, not arange: arange's points drift above .55, .6, ... and .75 would not be found by summarize
    return np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)


def _default_rec_thrs() -> np.ndarray:
    return np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


def _default_area_rngs() -> np.ndarray:
    return np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]], np.float64)


@dataclass(frozen=True, eq=False)
class CocoParams:
    """COCOeval.Params for bbox. cat_ids [K] sorted unique int64; iou_thrs [T]; rec_thrs [R];
    area_rngs [A, 2] in pixels^2 with area_labels [A]; max_dets [M] ascending."""

    cat_ids: np.ndarray
    iou_thrs: np.ndarray = field(default_factory=_default_iou_thrs)
    rec_thrs: np.ndarray = field(default_factory=_default_rec_thrs)
    area_rngs: np.ndarray = field(default_factory=_default_area_rngs)
    area_labels: tuple[str, ...] = AREA_LABELS
    max_dets: tuple[int, ...] = (1, 10, 100)

    @classmethod
    def for_gt(cls, gt: CocoGroundTruth, cat_ids=None) -> CocoParams:
        """Defaults for gt: all its categories, or the sorted unique `cat_ids` (ids gt lacks stay, as -1 rows)."""
        cats = gt.category_ids if cat_ids is None else np.unique(np.asarray(list(cat_ids), dtype=np.int64))
        return cls(cat_ids=cats)


@dataclass(frozen=True, eq=False)
class PerImageEval:
    """Per-image results, as flat arrays that ranks can ship as tensors (see as_arrays / from_arrays).

    img_index [I] int64: the images evaluated (positions in gt.image_ids), ascending.
    gt_img, gt_cat [G] int64 and gt_count [G, A] int64: non-ignored GT count of each (image, category id)
        that has GT, per area range.
    det_img, det_cat, det_rank [N] int64, det_score [N] float64, det_status [N, A, T] uint8 (FP/TP/IGNORED):
        every detection that takes part (rank = position in its (image, category) by score, < max(max_dets)).
    Rows are ordered by (image, category, rank).
    """

    img_index: np.ndarray
    gt_img: np.ndarray
    gt_cat: np.ndarray
    gt_count: np.ndarray
    det_img: np.ndarray
    det_cat: np.ndarray
    det_rank: np.ndarray
    det_score: np.ndarray
    det_status: np.ndarray

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PerImageEval:
        return cls(**{name: np.asarray(arrays[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, eq=False)
class CocoAccumulated:
    """COCOeval.eval: precision and scores [T, R, K, A, M], recall [T, K, A, M]; -1 where a setting has no GT."""

    params: CocoParams
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True, eq=False)
class CocoResult:
    """stats [12] in COCOeval.stats order (STAT_NAMES); per_class_ap: category id -> AP@[.5:.95] (area all,
    100 detections), -1 for categories without GT."""

    stats: np.ndarray
    per_class_ap: dict[int, float]
    accumulated: CocoAccumulated | None = None

    @property
    def ap(self) -> float:
        """AP@[.5:.95], what YOLOv5 reports as mAP50-95."""
        return float(self.stats[0])

    @property
    def ap50(self) -> float:
        return float(self.stats[1])

    def stats_dict(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(STAT_NAMES, self.stats)}

    def summary(self) -> str:
        return format_summary(self.stats)


def box_iou_coco(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes, exactly as pycocotools' bbIou. dt, gt: [P, 4] xywh float64; gt_crowd: [P] bool.
    For a crowd GT the union is the detection's area. Disjoint or touching boxes give 0. -> [P] float64."""
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    dt_area = dt[:, 2] * dt[:, 3]
    union = np.where(gt_crowd, dt_area, (dt_area + gt[:, 2] * gt[:, 3]) - inter)
    overlap = (w > 0) & (h > 0)
    out = np.zeros(len(inter))
    out[overlap] = inter[overlap] / union[overlap]
    return out


def _outside(area: np.ndarray, area_rngs: np.ndarray) -> np.ndarray:
    """[N] areas -> [N, A] bool: outside each range (range ends count as inside)."""
    return (area[:, None] < area_rngs[None, :, 0]) | (area[:, None] > area_rngs[None, :, 1])


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Start position of each run of equal values in sorted keys [N] -> [number of runs]."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)


def _rank_in_group(keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values in sorted keys [N] -> [N] int64."""
    starts = _group_starts(keys)
    counts = np.diff(np.r_[starts, len(keys)])
    return np.arange(len(keys)) - np.repeat(starts, counts)


def descending_rank(score: np.ndarray) -> np.ndarray:
    """Dense rank of each score, 0 for the highest; equal scores share a rank. [N] float64 -> [N] int64.

    One unstable sort (ties may land in any order: they get the same rank anyway) and a scatter, instead of the
    stable float sort that the order by score needs; callers break ties by position in an integer key."""
    n = len(score)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(score)
    by_value = score[order]
    dense = np.cumsum(np.r_[False, by_value[1:] != by_value[:-1]])
    rank = np.empty(n, np.int64)
    rank[order] = dense[-1] - dense
    return rank


def order_by_group_then_rank(group: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Permutation sorting by group [N] ascending, then rank [N] ascending, then input position: what a stable
    sort on (group, -score) gives with rank = descending_rank(score). -> [N] int64.

    The three are packed in one int64 whenever they fit (about 10x faster than a stable or lexicographic sort:
    the keys are unique, so numpy's SIMD sort of plain integers applies); np.lexsort otherwise."""
    n = len(group)
    if n == 0:
        return np.zeros(0, np.int64)
    bits_n, bits_r = int(n - 1).bit_length(), int(rank.max()).bit_length()
    if group.min() >= 0 and int(group.max()).bit_length() + bits_r + bits_n <= 63:
        key = np.left_shift(group, bits_r + bits_n)      # in place from here: three [N] arrays at most
        shifted = np.left_shift(rank, bits_n)
        key |= shifted
        del shifted
        key |= np.arange(n)
        key.sort()
        key &= (1 << bits_n) - 1
        return key
    return np.lexsort((rank, group))


def _category_index(cat_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each of values [N] in the sorted cat_ids [K], whether it is there); a lookup table when the
    ids span a small range (COCO's 1..90), a binary search otherwise."""
    K = len(cat_ids)
    if K == 0:
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    lo, hi = int(cat_ids[0]), int(cat_ids[-1])
    if hi - lo < (1 << 20):
        table = np.full(hi - lo + 3, -1, np.int64)              # the two extra slots catch ids outside the range
        table[cat_ids - lo + 1] = np.arange(K)
        k = table[np.clip(values - lo + 1, 0, hi - lo + 2)]
        return np.maximum(k, 0), k >= 0
    k = np.minimum(np.searchsorted(cat_ids, values), K - 1)
    return k, cat_ids[k] == values


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """[0..c0-1, 0..c1-1, ...] for counts [N] -> [sum(counts)]."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def _candidate_pairs(det_key, boxes, det_row, gt_key, gt_box, gt_crowd, min_iou, chunk_pairs=1 << 17):
    """All (detection, GT) pairs of the same (image, category) with IoU >= min_iou.

    det_key [D], gt_key [G]: sorted int64 group keys; detection i's box is boxes[det_row[i]], GT j's gt_box[j],
    xywh. -> (det_pos [P], gt_pos [P], iou [P])."""
    starts = _group_starts(det_key)
    sizes = np.diff(np.r_[starts, len(det_key)])
    lo_group = np.searchsorted(gt_key, det_key[starts], "left")     # per detection group: few searches
    n_group = np.searchsorted(gt_key, det_key[starts], "right") - lo_group
    with_gt = np.repeat(n_group > 0, sizes)
    dets = np.flatnonzero(with_gt)
    lo, n_gt = np.repeat(lo_group, sizes)[dets], np.repeat(n_group, sizes)[dets]
    out_d, out_g, out_iou = [], [], []
    # chunks bound the temporary pair arrays (a crowded class can pair 100 detections with 100s of GTs)
    csum = np.cumsum(n_gt)
    start = 0
    while start < len(dets):
        stop = int(np.searchsorted(csum, (csum[start - 1] if start else 0) + chunk_pairs, "right"))
        stop = max(stop, start + 1)
        counts = n_gt[start:stop]
        d = np.repeat(dets[start:stop], counts)
        g = np.repeat(lo[start:stop], counts) + _ragged_arange(counts)
        iou = box_iou_coco(boxes[det_row[d]], gt_box[g], gt_crowd[g])
        keep = iou >= min_iou
        out_d.append(d[keep]), out_g.append(g[keep]), out_iou.append(iou[keep])
        start = stop
    if not out_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def greedy_match(iou: np.ndarray, n_dets: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
                 thresholds: np.ndarray) -> np.ndarray:
    """COCOeval.evaluateImg's greedy matching for many (image, category) groups at once.

    iou [N, G]: one row per detection, the B groups one after another, each group's detections in score order
    and its GTs in file order as columns (-1 for padding columns); n_dets [B]: detections per group, descending
    (step d then works on the leading groups that still have a detection d); gt_ignore [B, A, G] bool;
    gt_crowd [B, G] bool; thresholds [T] (already min(t, 1 - 1e-10)).
    -> matched GT column [N, A, T] int64, -1 where the detection matched nothing.

    The only sequential dependency is between detections of one group competing for its GTs, so the loop runs
    over detection rank and is vectorized over groups, area ranges and thresholds.
    """
    G = iou.shape[1]
    B, A, T = len(n_dets), gt_ignore.shape[1], len(thresholds)
    first = np.r_[0, np.cumsum(n_dets)[:-1]].astype(np.int64)
    used = np.zeros((B, A, T, G), dtype=bool)
    match = np.full((len(iou), A, T), -1, dtype=np.int64)
    n_active = np.searchsorted(-n_dets, -np.arange(int(n_dets.max()) if B else 0), "left")  # groups with n_dets > d
    for d, n in enumerate(n_active.tolist()):
        rows = first[:n] + d
        iou_d = iou[rows]                                                   # [n, G]
        free = ~used[:n] | gt_crowd[:n, None, None, :]                      # [n, A, T, G]
        ok = free & (iou_d[:, None, :] >= thresholds[None, :, None])[:, None]
        ok_regular = ok & ~gt_ignore[:n, :, None, :]
        # a regular GT always wins over an ignored one (pycocotools breaks at the first ignored GT once it has one)
        pick = np.where(ok_regular.any(-1, keepdims=True), ok_regular, ok)
        value = np.where(pick, iou_d[:, None, None, :], -1.0)
        col = G - 1 - np.argmax(value[..., ::-1], axis=-1)                  # last of the best, as `>=` in the loop
        hit = pick.any(-1)
        match[rows] = np.where(hit, col, -1)
        b, a, t = np.nonzero(hit)
        used[b, a, t, col[b, a, t]] = True
    return match


def _pow2_ceil(x: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64)).astype(np.int64)


def _match_candidates(pair_d, pair_g, pair_iou, det_group, gt_group, gt_ignore, gt_crowd, thresholds):
    """greedy_match on the candidate pairs (IoU >= the lowest threshold) of all groups.

    pair_d, pair_g [P]: positions in the detection / GT tables, both sorted by group key (det_group, gt_group),
    detections by score within a group, GTs by file order; pair_iou [P]; gt_ignore [G, A]; gt_crowd [G].
    -> (candidate detection positions [C] ascending, matched GT position [C, A, T], -1 for none)."""
    A, T = gt_ignore.shape[1], len(thresholds)
    cand_d = np.unique(pair_d)     # ascending = by group, then by score rank
    cand_g = np.unique(pair_g)     # ascending = by group, then file order
    d_local = _rank_in_group(det_group[cand_d])
    g_local = _rank_in_group(gt_group[cand_g])
    groups, n_d = np.unique(det_group[cand_d], return_counts=True)
    n_g = np.bincount(np.searchsorted(groups, gt_group[cand_g]), minlength=len(groups))
    pair_cd = np.searchsorted(cand_d, pair_d)
    pair_col = g_local[np.searchsorted(cand_g, pair_g)]
    cand_group = np.searchsorted(groups, det_group[cand_d])
    d_first = np.r_[0, np.cumsum(n_d)[:-1]]     # first candidate detection of each group in cand_d
    g_first = np.r_[0, np.cumsum(n_g)[:-1]]     # first candidate GT of each group in cand_g
    result = np.full((len(cand_d), A, T), -1, dtype=np.int64)
    width = _pow2_ceil(n_g)
    # groups padded to a power-of-two GT count, so that one crowded image does not widen every group
    for w in np.unique(width).tolist():
        sel = np.flatnonzero(width == w)
        sel = sel[np.argsort(-n_d[sel], kind="stable")]
        n_sel = n_d[sel]
        row_first = np.full(len(groups), -1, dtype=np.int64)
        row_first[sel] = np.r_[0, np.cumsum(n_sel)[:-1]]
        # candidate detection i of this bucket sits at row row_first[its group] + d_local[i]
        members = np.repeat(d_first[sel], n_sel) + _ragged_arange(n_sel)
        iou = np.full((len(members), w), -1.0)
        in_bucket = row_first[cand_group[pair_cd]] >= 0
        pr = row_first[cand_group[pair_cd[in_bucket]]] + d_local[pair_cd[in_bucket]]
        iou[pr, pair_col[in_bucket]] = pair_iou[in_bucket]
        # GT attributes, padded; the padding is never matched (its IoU is -1)
        real = np.arange(w)[None, :] < n_g[sel][:, None]
        gt_pos = cand_g[np.where(real, g_first[sel][:, None] + np.arange(w)[None, :], 0)]      # [B, w]
        ign = np.where(real[:, None, :], gt_ignore[gt_pos].transpose(0, 2, 1), True)
        crowd = np.where(real, gt_crowd[gt_pos], False)
        col = greedy_match(iou, n_sel, ign, crowd, thresholds)              # [rows, A, T]
        row_group = np.repeat(np.arange(len(sel)), n_sel)
        result[members] = np.where(col >= 0, gt_pos[row_group[:, None, None], np.maximum(col, 0)], -1)
    return cand_d, result


@dataclass(frozen=True, eq=False)
class _Evaluated:
    """PerImageEval with most statuses left implicit, what evaluate_images computes and accumulate reads.

    Every detection with no GT at IoU >= the lowest threshold is unmatched everywhere (98% of them at COCO
    scale): its status is IGNORED in the area ranges its area lies outside, FP elsewhere, at every threshold.
    rows: the PerImageEval fields but det_status; outside [N, A] bool (read for implicit rows only);
    special [S] ascending row positions whose status is given, special_status [S, A, T] uint8;
    score_rank [N] int64: descending_rank of det_score, or any order-preserving equivalent."""

    rows: dict[str, np.ndarray]
    outside: np.ndarray
    special: np.ndarray
    special_status: np.ndarray
    score_rank: np.ndarray


def _per_image(ev: _Evaluated) -> PerImageEval:
    status = np.repeat(np.where(ev.outside, IGNORED, FP).astype(np.uint8)[:, :, None],
                       ev.special_status.shape[2], axis=2)
    status[ev.special] = ev.special_status
    return PerImageEval(**ev.rows, det_status=status)


def _evaluated(per_image: PerImageEval, chunk_rows: int = 1 << 18) -> _Evaluated:
    """The inverse of _per_image: the rows whose status is not constant per area range become the special ones."""
    status = per_image.det_status
    first = status[:, :, 0]
    varies = np.zeros(len(status), bool)
    for c in range(0, len(status), chunk_rows):      # chunks keep the comparison's temporary small
        part = status[c:c + chunk_rows]
        varies[c:c + chunk_rows] = (part != part[:, :, :1]).reshape(len(part), -1).any(axis=1)
    special = np.flatnonzero(varies | (first == TP).any(axis=1))
    rows = {name: getattr(per_image, name) for name in PerImageEval.__dataclass_fields__ if name != "det_status"}
    return _Evaluated(rows, first == IGNORED, special, status[special], descending_rank(per_image.det_score))


def evaluate_images(gt: CocoGroundTruth, dets: CocoDetections, img_ids=None,
                    params: CocoParams | None = None) -> PerImageEval:
    """COCOeval.evaluate for the images `img_ids` (ids as in gt; default all; ids gt lacks are skipped)."""
    return _per_image(_evaluate(gt, dets, img_ids, params or CocoParams.for_gt(gt)))


def _image_selection(gt: CocoGroundTruth, img_ids) -> tuple[np.ndarray, np.ndarray]:
    """(evaluated image positions ascending, in_eval [I + 1] bool whose extra slot is image index -1)."""
    n_img = len(gt.image_ids)
    if img_ids is None:
        img_index = np.arange(n_img, dtype=np.int64)
    else:
        img_index = gt.image_index(list(img_ids))
        img_index = np.unique(img_index[img_index >= 0])
    in_eval = np.zeros(n_img + 1, dtype=bool)
    in_eval[img_index] = True
    return img_index, in_eval


def _evaluate(gt: CocoGroundTruth, dets: CocoDetections, img_ids, params: CocoParams) -> _Evaluated:
    img_index, in_eval = _image_selection(gt, img_ids)
    cats = params.cat_ids
    K, A = len(cats), len(params.area_rngs)

    # ground truth, sorted by (image, category) keeping file order within
    gk, g_ok = _category_index(cats, gt.ann_category)
    g_sel = np.flatnonzero(g_ok & in_eval[gt.ann_image])
    g_sel = g_sel[np.argsort(gt.ann_image[g_sel] * K + gk[g_sel], kind="stable")]
    g_key = gt.ann_image[g_sel] * K + gk[g_sel]
    g_crowd = gt.ann_crowd[g_sel]
    g_ignore = g_crowd[:, None] | _outside(gt.ann_area[g_sel], params.area_rngs)         # [G, A]

    # detections: (image, category), then score descending, file order among equal scores; top max_det
    dk, d_ok = _category_index(cats, dets.category_ids)
    d_sel = np.flatnonzero(d_ok & in_eval[dets.image_index])
    score_rank = descending_rank(dets.scores[d_sel])
    d_key = dets.image_index[d_sel] * K + dk[d_sel]
    order = order_by_group_then_rank(d_key, score_rank)
    d_sel, d_key, score_rank = d_sel[order], d_key[order], score_rank[order]
    d_rank = _rank_in_group(d_key)
    top = d_rank < max(params.max_dets)
    if not top.all():
        d_sel, d_key, d_rank, score_rank = d_sel[top], d_key[top], d_rank[top], score_rank[top]
    # areas in file order, then gathered: reading the boxes in sorted order would be a random access per row
    d_outside = _outside(dets.boxes[:, 2] * dets.boxes[:, 3], params.area_rngs)[d_sel]    # [N, A]
    special, special_status = _special_status(d_key, dets.boxes, d_sel, d_outside, g_key, gt.ann_boxes[g_sel],
                                              g_crowd, g_ignore, gt.ann_ids[g_sel], params.iou_thrs)

    # non-ignored GT per (image, category)
    starts = _group_starts(g_key)
    gt_count = np.add.reduceat((~g_ignore).astype(np.int64), starts, axis=0) if len(starts) else \
        np.zeros((0, A), np.int64)
    rows = dict(
        img_index=img_index,
        gt_img=gt.ann_image[g_sel][starts], gt_cat=cats[gk[g_sel][starts]] if K else np.zeros(0, np.int64),
        gt_count=gt_count,
        det_img=dets.image_index[d_sel], det_cat=dets.category_ids[d_sel], det_rank=d_rank,
        det_score=dets.scores[d_sel])
    return _Evaluated(rows, d_outside, special, special_status, score_rank)


def _special_status(d_key, boxes, d_sel, d_outside, g_key, g_box, g_crowd, g_ignore, g_ids, iou_thrs):
    """The detections with a GT at IoU >= the lowest threshold, and their status [S, A, T] after the greedy
    match; arguments in the sorted order of _evaluate, detection i's box is boxes[d_sel[i]].
    -> (row positions [S] ascending, status uint8)."""
    T, A = len(iou_thrs), d_outside.shape[1]
    thresholds = np.minimum(iou_thrs, 1 - 1e-10)
    pair_d, pair_g, pair_iou = _candidate_pairs(d_key, boxes, d_sel, g_key, g_box, g_crowd,
                                                thresholds.min() if T else np.inf)
    if not len(pair_d):
        return np.zeros(0, np.int64), np.zeros((0, A, T), np.uint8)
    cand, gt_of = _match_candidates(pair_d, pair_g, pair_iou, d_key, g_key, g_ignore, g_crowd, thresholds)
    hit = gt_of >= 0
    m = np.maximum(gt_of, 0)
    # pycocotools stores the matched GT's id and tests it for truth: a GT id of 0 reads as "no match"
    hit_id = hit & (g_ids[m] != 0)
    ignored = (hit & g_ignore[m, np.arange(A)[None, :, None]]) | (~hit_id & d_outside[cand][:, :, None])
    return cand, np.where(ignored, IGNORED, np.where(hit_id, TP, FP)).astype(np.uint8)


def merge(parts: list[PerImageEval]) -> PerImageEval:
    """Join results of disjoint image sets into the result evaluate_images gives for their union."""
    if not parts:
        raise ValueError("merge needs at least one part")
    cat = {name: np.concatenate([getattr(p, name) for p in parts]) for name in PerImageEval.__dataclass_fields__}
    if len(np.unique(cat["img_index"])) != len(cat["img_index"]):
        raise ValueError("merge: the parts share images; each image must be evaluated by exactly one part")
    # each part is already in (image, category, rank) order and owns its images: a stable sort by image suffices
    img = np.argsort(cat["img_index"], kind="stable")
    g = np.argsort(cat["gt_img"], kind="stable")
    d = np.argsort(cat["det_img"], kind="stable")
    return PerImageEval(
        img_index=cat["img_index"][img],
        gt_img=cat["gt_img"][g], gt_cat=cat["gt_cat"][g], gt_count=cat["gt_count"][g],
        det_img=cat["det_img"][d], det_cat=cat["det_cat"][d], det_rank=cat["det_rank"][d],
        det_score=cat["det_score"][d], det_status=cat["det_status"][d])


def _min_count_reaching(thresholds: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """Smallest integer c with float64(c / n) >= thr, for thresholds [R] and GT counts n [A] (> 0) -> [A, R].

    Recall after a detection is tp / n with tp an integer, and float division is monotone in tp, so
    searchsorted(recall, thr) is the number of positions whose tp count is below this c."""
    n = n_gt[:, None].astype(np.float64)
    c = np.maximum(np.ceil(thresholds[None, :] * n) - 2, 0)
    for _ in range(5):
        c += (c / n) < thresholds[None, :]
    assert ((c / n) >= thresholds).all() and ((c == 0) | (((c - 1) / n) < thresholds)).all()
    return c.astype(np.int64)


def _row_searchsorted(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """searchsorted(counts[row], targets[row], 'left') for every row at once.

    counts [..., C] non-decreasing integers in [0, C] per row; targets [..., R] integers >= 0 -> [..., R] int64.
    Rows are laid end to end with gaps (integer keys, so exact) and searched in one call."""
    C = counts.shape[-1]
    stride = C + 2
    rows = np.arange(int(np.prod(counts.shape[:-1]))).reshape(counts.shape[:-1])[..., None]
    keys = (counts + rows * stride).ravel()
    found = np.searchsorted(keys, (np.minimum(targets, C + 1) + rows * stride).ravel(), "left")
    return found.reshape(targets.shape) - rows * C


def _curve(status: np.ndarray, plain_fp_before: np.ndarray, n_gt: np.ndarray, c_min: np.ndarray):
    """One category's precision/recall sampling, on the detections that are not plain FP/ignored.

    status [a, T, C] of those C detections in score order; plain_fp_before [a, C]: plain FPs ranked above each;
    n_gt [a] > 0 non-ignored GTs; c_min [a, 1, R] from _min_count_reaching.
    -> (final recall [a, T], precision [a, T, R], j [a, T, R] the detection (0..C-1) where each recall threshold
    is first reached, reached [a, T, R] bool (False: never, precision 0))."""
    a, T, C = status.shape
    tp = np.cumsum(status == TP, axis=-1)
    fp = np.cumsum(status == FP, axis=-1) + plain_fp_before[:, None, :]
    tpf, fpf = tp.astype(np.float64), fp.astype(np.float64)
    rc_end = (tpf[..., -1] if C else np.zeros((a, T))) / n_gt[:, None]
    j = _row_searchsorted(tp, np.broadcast_to(c_min, (a, T, c_min.shape[-1])))
    reached = j < C
    if not C:
        return rc_end, np.zeros(j.shape), j, reached
    pr = tpf / (fpf + tpf + np.spacing(1))
    pr_max = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]
    q = np.where(reached, np.take_along_axis(pr_max, np.minimum(j, C - 1), axis=-1), 0.0)
    return rc_end, q, j, reached


def accumulate(per_image: PerImageEval, params: CocoParams) -> CocoAccumulated:
    """COCOeval.accumulate: per category, area range and detection budget, the detections of all images sorted
    by score (stable: ties keep image order, then rank), cumulative TP/FP, precision made non-increasing from
    the right, sampled at rec_thrs with searchsorted(side='left'); 0 past the last recall reached."""
    return _accumulate(_evaluated(per_image), params)


def _accumulate(ev: _Evaluated, params: CocoParams) -> CocoAccumulated:
    """accumulate on the compact form.

    Computed without materializing the cumulative arrays over all detections: precision is only ever read at
    a TP (or at the first detection), and between TPs it can only fall, so the suffix maximum over the
    special detections is the same number. The implicit ones (most of them) enter only as a count of FPs
    before each special one. Every value is computed by the same float operations on the same integers as
    pycocotools, so the results are identical, not just close.
    """
    T, R, K = len(params.iou_thrs), len(params.rec_thrs), len(params.cat_ids)
    A, M = len(params.area_rngs), len(params.max_dets)
    out = CocoAccumulated(params, -np.ones((T, R, K, A, M)), -np.ones((T, K, A, M)), -np.ones((T, R, K, A, M)))
    if K == 0:
        return out
    o = _in_score_order(ev, params.cat_ids)
    has_gt = o.n_gt > 0                                                     # [K, A]
    c_min = np.zeros((K, A, R), dtype=np.int64)
    c_min[has_gt] = _min_count_reaching(params.rec_thrs, o.n_gt[has_gt])
    plain_fp_before = np.zeros((A, len(o.sel) + 1), dtype=np.int32)
    for m, max_det in enumerate(params.max_dets):
        keep = o.rank < max_det
        np.cumsum(o.plain_fp & keep, axis=1, out=plain_fp_before[:, 1:])
        kept_pos = np.flatnonzero(keep)
        first = np.searchsorted(kept_pos, o.bounds[:-1])                    # each category's first kept detection
        any_kept = first < np.searchsorted(kept_pos, o.bounds[1:])
        first_score = (ev.rows["det_score"][o.sel[kept_pos[np.minimum(first, len(kept_pos) - 1)]]]
                       if len(kept_pos) else np.zeros(K))
        mine = np.flatnonzero(keep[o.sp_pos])              # the kept special detections, category after category
        counts = np.bincount(o.sp_cat[mine], minlength=K)
        curves = _Curves(out, m, o.n_gt, c_min, first_score, mine, np.cumsum(counts) - counts, counts, o.sp_pos,
                         o.sp_status, o.sp_score, plain_fp_before, o.bounds)
        curves.fill_empty(has_gt & ~any_kept[:, None], kept=False)           # no detections: recall, precision 0
        curves.fill_empty(has_gt & (any_kept & (counts == 0))[:, None], kept=True)
        todo = np.flatnonzero(has_gt.any(axis=1) & any_kept & (counts > 0))
        width = _pow2_ceil(counts[todo])
        for w in np.unique(width):                   # categories of similar size together, padded to width w
            cats = todo[width == w]
            per_batch = max(1, _BATCH_ENTRIES // (A * T * int(w)))
            for c in range(0, len(cats), per_batch):
                curves.fill(cats[c:c + per_batch], int(w))
    return out


@dataclass(frozen=True)
class _ScoreOrder:
    """The detections of _accumulate's categories sorted by (category, score): sel [N] their rows in ev; a
    category k is the slice bounds[k]:bounds[k + 1] of every [N] array. n_gt [K, A] non-ignored GT; rank [N];
    plain_fp [A, N] plain FPs (not special, not outside the area); the special ones: sp_pos [S] their sorted
    positions, sp_cat [S], sp_status [S, A, T], sp_score [S]."""

    n_gt: np.ndarray
    sel: np.ndarray
    bounds: np.ndarray
    rank: np.ndarray
    plain_fp: np.ndarray
    sp_pos: np.ndarray
    sp_cat: np.ndarray
    sp_status: np.ndarray
    sp_score: np.ndarray


def _in_score_order(ev: _Evaluated, cats: np.ndarray) -> _ScoreOrder:
    K = len(cats)
    n_gt = np.zeros((K, ev.rows["gt_count"].shape[1]), dtype=np.int64)
    gk, g_ok = _category_index(cats, ev.rows["gt_cat"])
    np.add.at(n_gt, gk[g_ok], ev.rows["gt_count"][g_ok])
    dk, d_ok = _category_index(cats, ev.rows["det_cat"])
    sel = np.flatnonzero(d_ok)
    # rows come in (image, category, rank) order, so ordering (category, -score) by position leaves equal scores
    # in image order, then rank: pycocotools' mergesort over its image-ordered concatenation
    sel = sel[order_by_group_then_rank(dk[sel], ev.score_rank[sel])]
    bounds = np.searchsorted(dk[sel], np.arange(K + 1))
    del dk, d_ok
    special = np.zeros(len(ev.outside), bool)
    special[ev.special] = True
    special = special[sel]
    plain_fp = np.ascontiguousarray((~ev.outside[sel] & ~special[:, None]).T)   # [A, N], rows contiguous for cumsum
    sp_pos = np.flatnonzero(special)
    del special
    sp_cat = np.repeat(np.arange(K), np.diff(np.searchsorted(sp_pos, bounds)))
    return _ScoreOrder(n_gt, sel, bounds, ev.rows["det_rank"][sel], plain_fp, sp_pos, sp_cat,
                       ev.special_status[np.searchsorted(ev.special, sel[sp_pos])], ev.rows["det_score"][sel[sp_pos]])


# A padded batch of categories holds about this many status entries ([rows, T, width]) at most: batching the
# small categories never takes more memory than the largest category alone.
_BATCH_ENTRIES = 1 << 18


@dataclass(frozen=True)
class _Curves:
    """One detection budget m of _accumulate: fills out's entries [.., k, a, m] for (category, area) rows.

    n_gt, c_min [K, A(, R)]; first_score [K]: the score of each category's first kept detection (recall
    threshold 0 is reached there, whatever it is); mine [S']: the kept special detections (indexes into sp_*),
    category after category, starts/counts [K] their slice per category; sp_pos [S]: their sorted positions,
    sp_status [S, A, T], sp_score [S]; plain_fp_before [A, N + 1]; bounds [K + 1]: each category's positions."""

    out: CocoAccumulated
    m: int
    n_gt: np.ndarray
    c_min: np.ndarray
    first_score: np.ndarray
    mine: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    sp_pos: np.ndarray
    sp_status: np.ndarray
    sp_score: np.ndarray
    plain_fp_before: np.ndarray
    bounds: np.ndarray

    def _put(self, k, a, recall, precision, scores) -> None:
        """recall [rows, T], precision and scores [rows, T, R] of the rows (k, a)."""
        self.out.recall[:, k, a, self.m] = recall.T
        self.out.precision[:, :, k, a, self.m] = precision.transpose(1, 2, 0)
        self.out.scores[:, :, k, a, self.m] = scores.transpose(1, 2, 0)

    def fill_empty(self, rows: np.ndarray, kept: bool) -> None:
        """rows [K, A] bool: settings without a special kept detection, so recall and precision are 0; scores 0,
        or, where the category has kept (plain FP) detections, its first kept score at the thresholds reached at
        once (c_min 0)."""
        k, a = np.nonzero(rows)
        T, R = self.out.recall.shape[0], self.c_min.shape[-1]
        zeros = np.zeros((len(k), T, R))
        scores = zeros if not kept else np.where(
            self.c_min[k, a][:, None, :] == 0, self.first_score[k][:, None, None], 0.0) + zeros
        self._put(k, a, zeros[:, :, 0], zeros, scores)

    def fill(self, cats: np.ndarray, width: int) -> None:
        """The rows of these categories (each with 1..width kept special detections), as one padded _curve: the
        padding is neither TP nor FP and repeats the last detection, so it changes no cumulative count."""
        i, a = np.nonzero(self.n_gt[cats] > 0)
        k = cats[i]
        cols = np.arange(width)[None, :]
        count = self.counts[k][:, None]
        sp = self.mine[self.starts[k][:, None] + np.minimum(cols, count - 1)]    # [rows, width]
        status = np.where((cols < count)[:, :, None], self.sp_status[sp, a[:, None]], IGNORED)
        fp_plain = (self.plain_fp_before[a[:, None], self.sp_pos[sp]]
                    - self.plain_fp_before[a, self.bounds[k]][:, None])
        c_min = self.c_min[k, a][:, None, :]
        rc_end, q, j, reached = _curve(status.transpose(0, 2, 1), fp_plain, self.n_gt[k, a], c_min)
        picked = self.sp_score[sp][np.arange(len(k))[:, None, None], np.minimum(j, width - 1)]
        ss = np.where(c_min == 0, self.first_score[k][:, None, None], np.where(reached, picked, 0.0))
        self._put(k, a, rc_end, q, ss)


def select_categories(per_image: PerImageEval, cat_ids: np.ndarray) -> PerImageEval:
    """The rows of per_image whose category is in cat_ids (images kept): what evaluate_images gives for them."""
    g = np.isin(per_image.gt_cat, cat_ids)
    d = np.isin(per_image.det_cat, cat_ids)
    return PerImageEval(per_image.img_index, per_image.gt_img[g], per_image.gt_cat[g], per_image.gt_count[g],
                        per_image.det_img[d], per_image.det_cat[d], per_image.det_rank[d], per_image.det_score[d],
                        per_image.det_status[d])


def category_shares(params: CocoParams, n: int) -> list[CocoParams]:
    """params split into n category subsets (every n-th category), for accumulating in n processes: each category
    is accumulated on its own, so `join_categories` of the shares' results equals accumulate over all of them."""
    return [replace(params, cat_ids=params.cat_ids[r::n]) for r in range(n)]


def join_categories(params: CocoParams, parts: list[CocoAccumulated]) -> CocoAccumulated:
    """CocoAccumulated of disjoint category subsets (each part's params.cat_ids within params.cat_ids) -> the one
    accumulate(.., params) gives; categories no part holds stay -1."""
    T, R, K = len(params.iou_thrs), len(params.rec_thrs), len(params.cat_ids)
    A, M = len(params.area_rngs), len(params.max_dets)
    precision, scores = -np.ones((T, R, K, A, M)), -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for part in parts:
        k = np.searchsorted(params.cat_ids, part.params.cat_ids)
        if not np.array_equal(params.cat_ids[np.minimum(k, K - 1)], part.params.cat_ids):
            raise ValueError("join_categories: a part has categories that params lacks")
        precision[:, :, k], scores[:, :, k], recall[:, k] = part.precision, part.scores, part.recall
    return CocoAccumulated(params, precision, recall, scores)


def _summarize_one(acc: CocoAccumulated, is_ap: bool, iou_thr: float | None, area: str, max_det: int) -> float:
    """One COCOeval._summarize value: mean over the selected entries > -1, else -1 (same indexing, same
    np.mean, so the same summation order)."""
    p = acc.params
    aind = [i for i, lbl in enumerate(p.area_labels) if lbl == area]
    mind = [i for i, m in enumerate(p.max_dets) if m == max_det]
    s = acc.precision if is_ap else acc.recall
    if iou_thr is not None:
        s = s[np.where(iou_thr == p.iou_thrs)[0]]
    s = s[:, :, :, aind, mind] if is_ap else s[:, :, aind, mind]
    return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))


def summarize(acc: CocoAccumulated) -> np.ndarray:
    """COCOeval.summarize for bbox -> stats [12] (see STAT_NAMES). Needs three max_dets, as pycocotools."""
    return np.array([_summarize_one(acc, ap, thr, area, acc.params.max_dets[mi])
                     for ap, thr, area, mi in _STAT_SPECS])


def per_class_ap(acc: CocoAccumulated) -> dict[int, float]:
    """AP@[.5:.95] per category (area 'all', the largest max_dets): mean of precision[:, :, k, 0, -1] over
    entries > -1, -1 for a category without GT."""
    out = {}
    for k, cat in enumerate(acc.params.cat_ids.tolist()):
        s = acc.precision[:, :, k, 0, -1]
        s = s[s > -1]
        out[int(cat)] = float(np.mean(s)) if s.size else -1.0
    return out


def accumulate_images(gt: CocoGroundTruth, dets: CocoDetections, img_ids, params: CocoParams,
                      workers: int = 1) -> CocoAccumulated:
    """accumulate(evaluate_images(gt, dets, img_ids, params), params) without the per-image statuses in
    between. workers > 1: every workers-th category is evaluated and accumulated in its own forked process
    (categories are independent: the same numbers)."""
    shares = category_shares(params, max(1, min(workers, len(params.cat_ids))))

    def share(i: int) -> CocoAccumulated:
        return _accumulate(_evaluate(gt, dets, img_ids, shares[i]), shares[i])

    return share(0) if len(shares) == 1 else join_categories(params, fork_map(share, len(shares)))


def coco_evaluate(gt: CocoGroundTruth, dets: CocoDetections, img_ids=None, cat_ids=None,
                  workers: int = 1) -> CocoResult:
    """evaluate_images + accumulate + summarize, as COCOeval(gt, loadRes(dets), 'bbox') with params.imgIds /
    params.catIds set to img_ids / cat_ids when given; workers as accumulate_images."""
    params = CocoParams.for_gt(gt, cat_ids)
    acc = accumulate_images(gt, dets, img_ids, params, workers)
    return CocoResult(stats=summarize(acc), per_class_ap=per_class_ap(acc), accumulated=acc)


def format_summary(stats, iou_thrs: np.ndarray | None = None, max_dets: tuple[int, ...] = (1, 10, 100)) -> str:
    """The 12 lines COCOeval.summarize prints for these stats, joined with newlines (no trailing newline)."""
    thrs = _default_iou_thrs() if iou_thrs is None else iou_thrs
    lines = []
    for (is_ap, thr, area, mi), value in zip(_STAT_SPECS, stats):
        iou = f"{thrs[0]:0.2f}:{thrs[-1]:0.2f}" if thr is None else f"{thr:0.2f}"
        title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
        lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets[mi]:>3d} ] "
                     f"= {value:0.3f}")
    return "\n".join(lines)
