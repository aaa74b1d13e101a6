"""bench.bootstrap: a weighted COCO accumulate that matches pycocotools, and the paired bootstrap."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.bootstrap import (
    METRICS,
    Accumulator,
    ImageEval,
    Interval,
    _min_counts,
    accumulate,
    coco_metric_fn,
    metric_values,
    paired_bootstrap,
    verdict,
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


def test_coco_metric_fn(coco_gt: COCO, detections: list[dict], cocoeval: COCOeval,
                        image_eval: ImageEval) -> None:
    metric = coco_metric_fn([image_eval, image_eval])
    ones = np.ones(len(image_eval.image_ids), dtype=np.int64)
    expected = metric_values(cocoeval.eval["precision"][..., -1], cocoeval.eval["recall"][..., -1],
                             image_eval.area_labels, image_eval.iou_thresholds)
    assert np.array_equal(metric(1, ones), np.array([expected[m] for m in METRICS]), equal_nan=True)
    # an evaluation on other images is refused
    fewer = coco_gt.getImgIds()[:50]
    with contextlib.redirect_stdout(io.StringIO()):
        other = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(detections)), "bbox")
        other.params.imgIds = fewer
        other.evaluate()
    with pytest.raises(ValueError, match="different validation images"):
        coco_metric_fn([image_eval, ImageEval.from_cocoeval(other)])


def test_bootstrap_on_coco(coco_gt: COCO, detections: list[dict], image_eval: ImageEval) -> None:
    """A detector that keeps only its higher-scoring half of the boxes is behind on recall."""
    cut = np.median([d["score"] for d in detections])
    weaker = ImageEval.from_cocoeval(
        run_cocoeval(coco_gt, [copy.deepcopy(d) for d in detections if d["score"] >= cut]))
    num_images = len(image_eval.image_ids)
    same = coco_metric_fn([image_eval, image_eval])
    interval = paired_bootstrap(same, same, 2, num_images, replicates=20)
    assert np.array_equal(interval.low, np.zeros(len(METRICS)))
    assert np.array_equal(interval.high, np.zeros(len(METRICS)))
    interval = paired_bootstrap(same, coco_metric_fn([weaker, weaker]), 2, num_images, replicates=40)
    assert np.all(interval.low <= interval.difference) and np.all(interval.difference <= interval.high)
    mean_ar = METRICS.index("mean AR")
    assert interval.difference[mean_ar] > 0
    assert verdict(interval, mean_ar) == "ahead"


def image_metric(values: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
    """metric(s, weights): per seed, weighted means over images of values[s] [I, M]."""
    return lambda s, w: w @ values[s] / w.sum()


def test_identical_detectors_give_zero_interval() -> None:
    values = np.random.default_rng(1).normal(size=(4, 30, 3))
    metric = image_metric(values)
    interval = paired_bootstrap(metric, metric, num_seeds=4, num_images=30, replicates=200)
    for field in (interval.difference, interval.low, interval.high):
        assert np.array_equal(field, np.zeros(3))
    assert (interval.seeds, interval.replicates) == (4, 200)


def test_constant_shift_gives_exact_interval() -> None:
    rng = np.random.default_rng(2)
    values, offsets = rng.normal(size=(5, 40, 3)), rng.normal(size=(5, 3))
    shift = np.array([0.5, -1.25, 3.0])

    def metric_a(s: int, w: np.ndarray) -> np.ndarray:
        return w @ values[s] / w.sum() + offsets[s]

    interval = paired_bootstrap(metric_a, lambda s, w: metric_a(s, w) - shift, 5, 40, replicates=300)
    for field in (interval.difference, interval.low, interval.high):
        np.testing.assert_allclose(field, shift, rtol=0, atol=1e-12)


def test_seed_noise_widens_interval_and_one_seed_cannot_see_it() -> None:
    noise = np.random.default_rng(3).normal(size=(6, 2))
    base = np.array([40.0, 20.0])

    def interval_for(scale: float, seeds: int = 6) -> Interval:
        return paired_bootstrap(lambda s, w: base + scale * noise[s], lambda s, w: base,
                                seeds, 25, replicates=300)

    narrow, wide = interval_for(1.0), interval_for(3.0)
    np.testing.assert_allclose(wide.difference, 3 * noise.mean(axis=0), atol=1e-12)
    assert np.all(narrow.high - narrow.low > 0)
    # same draws, so the width follows the seed spread exactly
    np.testing.assert_allclose(wide.high - wide.low, 3 * (narrow.high - narrow.low), rtol=1e-9)
    single = interval_for(3.0, seeds=1)
    assert np.array_equal(single.low, single.high) and np.array_equal(single.low, single.difference)
    assert verdict(single, 0) == "training noise not measured"


def test_seeds_drawn_twice_count_twice() -> None:
    """With metric_a(s) one-hot in s, a replicate is each seed's share of the 5 draws:
    Binomial(5, 1/5) / 5, so 0 at the 2.5th percentile and 3/5 at the 97.5th."""
    interval = paired_bootstrap(lambda s, w: np.eye(5)[s], lambda s, w: np.zeros(5), 5, 10,
                                replicates=1000, rng_seed=5)
    np.testing.assert_allclose(interval.difference, np.full(5, 0.2), atol=1e-15)
    assert np.array_equal(interval.low, np.zeros(5))
    np.testing.assert_allclose(interval.high, np.full(5, 0.6), atol=1e-12)


def test_image_bootstrap_of_a_mean_matches_normal_theory() -> None:
    x = np.random.default_rng(4).normal(size=(1, 400, 1))
    interval = paired_bootstrap(image_metric(x), lambda s, w: np.zeros(1), 1, 400, replicates=2000)
    half_width = 1.96 * x.std() / np.sqrt(400)
    assert interval.difference[0] == pytest.approx(x.mean(), abs=1e-12)
    assert (interval.high[0] - interval.low[0]) / 2 == pytest.approx(half_width, rel=0.1)
    assert interval.low[0] < x.mean() < interval.high[0]


def test_replicate_shares_one_image_draw_and_evaluates_each_seed_once() -> None:
    calls: list[tuple[str, int, bytes]] = []

    def recorder(name: str) -> Callable[[int, np.ndarray], np.ndarray]:
        def metric(s: int, w: np.ndarray) -> np.ndarray:
            assert w.sum() == 20 and w.dtype.kind == "i"
            calls.append((name, s, w.tobytes()))
            return np.array([float(s), w[0]])
        return metric

    interval = paired_bootstrap(recorder("a"), recorder("b"), 5, 20, replicates=50, rng_seed=9)
    by_draw: dict[bytes, list[tuple[str, int]]] = {}
    for name, s, draw in calls:
        by_draw.setdefault(draw, []).append((name, s))
    assert len(by_draw) == 51  # the point estimate's ones, then one draw per replicate
    fewer_seeds = 0
    for seen in by_draw.values():
        seeds_a = [s for name, s in seen if name == "a"]
        assert len(seeds_a) == len(set(seeds_a)) and sorted(seeds_a) == sorted(s for n, s in seen if n == "b")
        fewer_seeds += len(seeds_a) < 5
    assert fewer_seeds > 0  # seeds are drawn with replacement
    again = paired_bootstrap(recorder("a"), recorder("b"), 5, 20, replicates=50, rng_seed=9)
    assert np.array_equal(again.low, interval.low) and np.array_equal(again.high, interval.high)


def test_nan_replicates_are_left_out_quietly() -> None:
    """A metric undefined in some resamples (no ground truth drawn) or in all of them."""
    def metric_a(s: int, w: np.ndarray) -> np.ndarray:
        return np.array([1.0 if w[0] else np.nan, np.nan])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = paired_bootstrap(metric_a, lambda s, w: np.zeros(2), 2, 3, replicates=100)
    assert (interval.low[0], interval.high[0]) == (1.0, 1.0)
    assert np.isnan(interval.low[1]) and np.isnan(interval.high[1]) and np.isnan(interval.difference[1])


def test_verdict_strings() -> None:
    interval = Interval(difference=np.array([1.0, -1.0, 0.0, np.nan]),
                        low=np.array([0.5, -2.0, -1.0, np.nan]),
                        high=np.array([2.0, -0.5, 1.0, np.nan]), seeds=3, replicates=100)
    assert [verdict(interval, i) for i in range(4)] == [
        "ahead", "behind", "not resolved at 95%", "not resolved at 95%"]
    assert verdict(interval, 0, seeds=1) == "training noise not measured"
    assert verdict(Interval(interval.difference, interval.low, interval.high, 3, 100, level=0.9), 2) \
        == "not resolved at 90%"
