"""bench.bootstrap: a weighted, batched COCO accumulate that matches pycocotools."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.bootstrap import (
    METRICS,
    Accumulator,
    ImageEval,
    _min_counts,
    accumulate,
    metric_values,
    replicate_metrics,
)

DATA = Path(__file__).resolve().parent / "data" / "coco-val2014-100"
GT_FILE = DATA / "instances_val2014_100.json"
DT_FILE = DATA / "fakebbox100_results.json"
# pycocotools' stats index for the METRICS it also reports
STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "mean AR": 8}


def run_cocoeval(gt: COCO, detections: list[dict]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval = COCOeval(gt, gt.loadRes(detections), "bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval


@pytest.fixture(scope="module")
def coco_gt() -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(GT_FILE))


@pytest.fixture(scope="module")
def detections() -> list[dict]:
    return json.loads(DT_FILE.read_text())


@pytest.fixture(scope="module")
def cocoeval(coco_gt: COCO, detections: list[dict]) -> COCOeval:
    return run_cocoeval(coco_gt, copy.deepcopy(detections))


@pytest.fixture(scope="module")
def image_eval(cocoeval: COCOeval) -> ImageEval:
    return ImageEval.from_cocoeval(cocoeval)


def pycocotools_on_duplicates(cocoeval: COCOeval, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' own accumulate on the image list with image i repeated weights[i] times.

    evaluate() would drop duplicate params.imgIds (np.unique), so the [k][a][i] evalImgs
    layout is rebuilt with the copies next to each other, and the image lists that
    accumulate indexes with (params and the private _paramsEval) are set to match.
    """
    p = cocoeval.params
    K, A, I = len(p.catIds), len(p.areaRng), len(p.imgIds)
    images = np.repeat(np.arange(I), weights)
    dup = copy.copy(cocoeval)
    dup.params, dup._paramsEval = copy.deepcopy(cocoeval.params), copy.deepcopy(cocoeval._paramsEval)
    dup.params.imgIds = dup._paramsEval.imgIds = [p.imgIds[i] for i in images]
    dup.evalImgs = [cocoeval.evalImgs[(k * A + a) * I + i]
                    for k in range(K) for a in range(A) for i in images]
    with contextlib.redirect_stdout(io.StringIO()):
        dup.accumulate()
    return dup.eval["precision"][..., -1], dup.eval["recall"][..., -1]


def images_with_tied_scores(ev: ImageEval) -> np.ndarray:
    """Images where two detections of one category (and area range) share a score."""
    rows = np.stack([ev.category, ev.area, ev.image, ev.score.view(np.int64)], axis=1)
    _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
    return np.unique(ev.image[first[counts > 1]])


def test_unit_weights_reproduce_pycocotools_exactly(cocoeval: COCOeval, image_eval: ImageEval) -> None:
    expected_p, expected_r = cocoeval.eval["precision"][..., -1], cocoeval.eval["recall"][..., -1]
    assert (expected_p == -1).any() and (expected_p > 0).any()  # the fixture has both cases
    for weights in (None, np.ones(len(image_eval.image_ids), dtype=np.int64)):
        precision, recall = accumulate(image_eval, weights)
        assert np.array_equal(precision, expected_p)
        assert np.array_equal(recall, expected_r)
    values = metric_values(precision, recall, image_eval.area_labels, image_eval.iou_thresholds)
    assert list(values) == list(METRICS)
    for name, index in STATS_INDEX.items():
        assert values[name] == pytest.approx(cocoeval.stats[index] * 100, abs=1e-12), name
    assert values["AP50 all"] == values["AP50"]
    t85 = int(np.argmin(np.abs(image_eval.iou_thresholds - 0.85)))
    small = expected_r[t85, :, image_eval.area_labels.index("small")]
    assert values["AR85 small"] == pytest.approx(small[small > -1].mean() * 100, abs=1e-12)


def test_integer_weights_match_pycocotools_on_duplicated_images(
        cocoeval: COCOeval, image_eval: ImageEval) -> None:
    rng = np.random.default_rng(7)
    num_images = len(image_eval.image_ids)
    tied = images_with_tied_scores(image_eval)
    assert 0 < tied.size < num_images
    # the helper itself: every image once is pycocotools' own result
    once = pycocotools_on_duplicates(cocoeval, np.ones(num_images, dtype=np.int64))
    assert np.array_equal(once[0], cocoeval.eval["precision"][..., -1])
    acc = Accumulator(image_eval)
    for trial in range(8):
        if trial % 2:
            weights = rng.integers(0, 4, size=num_images)
        else:  # a bootstrap resample
            weights = np.bincount(rng.integers(num_images, size=num_images), minlength=num_images)
        # Recall does not depend on the order of detections: equal for any weights.
        assert np.array_equal(acc(weights)[1], pycocotools_on_duplicates(cocoeval, weights)[1])
        # Precision does where two detections of one image tie on score: pycocotools then
        # interleaves the copies (a, b, a', b') while a weight counts a twice, then b twice,
        # and the intermediate precisions differ. Such images are drawn at most once here;
        # everything else (ties across images included) must match exactly.
        weights[tied] = np.minimum(weights[tied], 1)
        precision, recall = acc(weights)
        expected_p, expected_r = pycocotools_on_duplicates(cocoeval, weights)
        assert np.array_equal(precision, expected_p), trial
        assert np.array_equal(recall, expected_r), trial


def test_zero_and_invalid_weights(image_eval: ImageEval) -> None:
    num_images = len(image_eval.image_ids)
    precision, recall = accumulate(image_eval, np.zeros(num_images, dtype=np.int64))
    assert (precision == -1).all() and (recall == -1).all()
    values = metric_values(precision, recall, image_eval.area_labels, image_eval.iou_thresholds)
    assert all(np.isnan(v) for v in values.values())
    for bad in (np.ones(num_images - 1), -np.ones(num_images), np.full(num_images, 0.5)):
        with pytest.raises(ValueError):
            accumulate(image_eval, bad)


def test_no_detections_give_zero_precision_where_there_is_ground_truth(image_eval: ImageEval) -> None:
    none = dataclasses.replace(image_eval, **{name: getattr(image_eval, name)[:0] for name in
                                              ("category", "area", "image", "score", "tp", "fp")})
    precision, recall = accumulate(none)
    has_gt = image_eval.num_gt.sum(axis=2) > 0  # [K, A]
    expected = np.where(has_gt, 0.0, -1.0)
    assert np.array_equal(precision, np.broadcast_to(expected, (10, 101) + expected.shape))
    assert np.array_equal(recall, np.broadcast_to(expected, (10,) + expected.shape))


def test_min_counts_is_searchsorted_on_recall(image_eval: ImageEval) -> None:
    thresholds = image_eval.rec_thresholds
    npig = np.arange(1, 3001)
    expected = [np.searchsorted(np.arange(n + 1) / n, thresholds, side="left") for n in npig]
    assert np.array_equal(_min_counts(npig, thresholds), np.array(expected))


def test_save_load_round_trip(image_eval: ImageEval, tmp_path: Path) -> None:
    path = tmp_path / "eval"  # no suffix: save writes exactly here
    image_eval.save(path)
    loaded = ImageEval.load(path)
    assert loaded.area_labels == image_eval.area_labels == ("all", "small", "medium", "large")
    for name in ("category", "area", "image", "score", "tp", "fp", "num_gt", "iou_thresholds",
                 "rec_thresholds", "category_ids", "image_ids"):
        original, restored = getattr(image_eval, name), getattr(loaded, name)
        assert restored.dtype == original.dtype and np.array_equal(restored, original), name
    weights = np.arange(len(image_eval.image_ids)) % 3
    for got, want in zip(accumulate(loaded, weights), accumulate(image_eval, weights)):
        assert np.array_equal(got, want)


def test_a_batch_equals_one_call_per_weighting(image_eval: ImageEval, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of a batch, split into several chunks, give exactly what one call per row gives."""
    num_images = len(image_eval.image_ids)
    rng = np.random.default_rng(11)
    weights = np.vstack([np.ones(num_images, np.int64), np.zeros(num_images, np.int64),
                         rng.multinomial(num_images, np.full(num_images, 1 / num_images), size=5),
                         rng.integers(0, 3, size=(2, num_images))])
    acc = Accumulator(image_eval)
    monkeypatch.setattr("bench.bootstrap.CHUNK_BYTES", 1)  # one row per chunk
    assert len(list(acc.chunks(weights))) == len(weights)
    monkeypatch.setattr("bench.bootstrap.CHUNK_BYTES", 3 * 8 * 10 * 101 * 320)  # three rows per chunk
    assert len(list(acc.chunks(weights))) == 3
    precision, recall = acc(weights)
    assert precision.shape == (len(weights), 10, 101, 80, 4) and recall.shape == (len(weights), 10, 80, 4)
    for row, w in enumerate(weights):
        single_p, single_r = acc(w)
        assert np.array_equal(precision[row], single_p) and np.array_equal(recall[row], single_r), row
    with pytest.raises(ValueError):
        acc(np.ones((2, 3, num_images)))


def test_replicate_metrics(coco_gt: COCO, detections: list[dict], cocoeval: COCOeval,
                           image_eval: ImageEval) -> None:
    ones = np.ones((1, len(image_eval.image_ids)), dtype=np.int64)
    expected = metric_values(cocoeval.eval["precision"][..., -1], cocoeval.eval["recall"][..., -1],
                             image_eval.area_labels, image_eval.iou_thresholds)
    values = replicate_metrics([image_eval, image_eval], np.vstack([ones, 2 * ones]))
    assert values.shape == (2, 2, len(METRICS))
    assert np.array_equal(values[1, 0], np.array([expected[m] for m in METRICS]), equal_nan=True)
    # every image counted twice: the same precision and recall curves
    np.testing.assert_allclose(values[0, 1], values[0, 0], rtol=1e-12)
    # an evaluation on other images is refused
    fewer = coco_gt.getImgIds()[:50]
    with contextlib.redirect_stdout(io.StringIO()):
        other = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(detections)), "bbox")
        other.params.imgIds = fewer
        other.evaluate()
    with pytest.raises(ValueError, match="different validation images"):
        replicate_metrics([image_eval, ImageEval.from_cocoeval(other)], ones)
