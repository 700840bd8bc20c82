"""detval.coco.json_columns: detection files read in byte ranges by forked workers, and the results list
written from columns with json.dump's exact bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from coco_synth import SynthSpec, make_coco_set

from detval.coco.json_columns import (NotFast, read_detection_columns, results_text, split_ranges,
                                      write_results)


def _columns(cols):
    return [cols.image_id, cols.category_id, cols.boxes, cols.scores]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("workers", [2, 3, 7])
def test_workers_read_the_same_columns(tmp_path, workers, indent):
    _, dets = make_coco_set(SynthSpec(seed=11, n_images=30, score_decimals=5))
    dets[3]["extra"] = {"note": "}, {\"image_id\": 5"}          # a '}' and a comma inside a string
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(dets, indent=indent))
    ref = read_detection_columns(path)
    assert len(ref.scores) == len(dets)
    for block in (100, 1 << 18):
        got = read_detection_columns(path, block_bytes=block, workers=workers)
        for a, b in zip(_columns(ref), _columns(got)):
            assert a.tobytes() == b.tobytes()


def test_split_ranges_meet_at_commas_between_records(tmp_path):
    path = tmp_path / "dt.json"
    path.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
                                for i in range(200)]))
    ranges = split_ranges(path, 4, window=1 << 10)
    text = path.read_bytes()
    assert len(ranges) == 4 and ranges[0][0] == 0 and ranges[-1][1] == len(text)
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        assert text[end:start] == b"," and text[:end].rstrip().endswith(b"}")


def test_a_split_inside_a_string_is_caught(tmp_path):
    """A wrong split (in a string) leaves a part that does not decode: NotFast, never wrong columns."""
    path = tmp_path / "dt.json"
    short = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    path.write_text(json.dumps([short, {**short, "note": "}, " * 3000}, short]))   # the middle is in the note
    with pytest.raises(NotFast):
        read_detection_columns(path, workers=2)


def _reference_text(ids, image, category, boxes, scores) -> bytes:
    return json.dumps([{"image_id": ids[i], "category_id": c, "bbox": b, "score": s}
                       for i, c, b, s in zip(image.tolist(), category.tolist(), boxes.tolist(),
                                             scores.tolist())]).encode()


def _rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.random(n * 4) * 700 - 20).astype(np.float32)
    boxes = np.array([round(v, 3) for v in x.tolist()]).reshape(-1, 4)
    scores = np.array([round(v, 5) for v in (rng.random(n).astype(np.float32) ** 4).tolist()])
    return rng.integers(0, 40, n), rng.integers(0, 91, n), boxes, scores


def test_results_text_is_json_dump(tmp_path):
    image, category, boxes, scores = _rows(5000)
    boxes[:6] = [[-0.0, 0.0, 0.001, 999999.999], [1.5, 2.25, 3.0, 100.0], [0.5, 0.004, -1.25, 7.0],
                 [1, 2, 3, 4], [12.5, 0.1, 0.2, 0.3], [5, 6, 7, 8]]
    scores[:6] = [0.0, 1.0, 0.0001, 0.00011, 5e-05, 1e-05]        # repr writes the last two with an exponent
    ids = list(range(7, 47))
    ids[3], ids[4] = "abc\u00e9\"x", -12
    texts = [json.dumps(i) for i in ids]
    expected = _reference_text(ids, image, category, boxes, scores)
    for rows in (64, 1 << 16):
        assert b"".join(results_text(texts, image, category, boxes, scores, rows=rows)) == expected
    out = tmp_path / "p.json"
    for workers in (1, 2, 3):
        write_results(out, texts, image, category, boxes, scores, workers=workers)
        assert out.read_bytes() == expected


def test_results_text_falls_back_to_json_dumps_for_other_values():
    """Values the tables do not cover (a box of 1e7 px, unrounded floats, a negative or huge category id)
    are written by json.dumps: the same bytes."""
    image, category, boxes, scores = _rows(300, seed=1)
    boxes[0, 3], boxes[1, 0], scores[2] = 1e7, 0.1 + 0.2, 1 / 3
    category[3], category[4] = -5, 10 ** 12
    ids = list(range(40))
    texts = [json.dumps(i) for i in ids]
    got = b"".join(results_text(texts, image, category, boxes, scores, rows=100))
    assert got == _reference_text(ids, image, category, boxes, scores)


def test_empty_results(tmp_path):
    e = np.zeros(0, np.int64)
    assert b"".join(results_text([], e, e, np.zeros((0, 4)), np.zeros(0))) == b"[]"
    write_results(tmp_path / "p.json", [], e, e, np.zeros((0, 4)), np.zeros(0), workers=4)
    assert (tmp_path / "p.json").read_bytes() == b"[]"
