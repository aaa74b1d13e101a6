"""Confidence intervals for the difference between two detectors' COCO box metrics.

One COCO number hides two sources of noise: which validation images were drawn and which
training seed was used. The paired two-level bootstrap here resamples both (seeds, then
images, the same draws for both detectors). Re-running pycocotools per replicate is far
too slow, so `ImageEval` keeps the per-detection outcome of `COCOeval.evaluate()` and
`Accumulator` redoes `COCOeval.accumulate()` (maxDets=100) for integer image weights in
a few vectorised numpy passes; with unit weights it reproduces pycocotools exactly.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from .files import atomic_write

if TYPE_CHECKING:
    from pycocotools.cocoeval import COCOeval

METRICS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AP50 all", "AP85 all", "AP50 small", "AP85 small", "AP50 large", "AP85 large",
    "AR50 small", "AR85 small", "AR50 large", "AR85 large", "mean AR",
)
# The paper's Tables 3 and 4 in full: AP and AR at IoU .50/.60/.70/.80/.85 and their mean, per size.
TABLE_IOUS = (50, 60, 70, 80, 85)
TABLE_SIZES = ("all", "small", "medium", "large")
_TABLES_3_4 = [f"{kind}{iou} {size}" for kind in ("AP", "AR") for size in TABLE_SIZES for iou in TABLE_IOUS]
_TABLES_3_4 += [f"mean AR {size}" for size in TABLE_SIZES[1:]]  # "mean AR" (all sizes) is already listed
METRICS += tuple(name for name in _TABLES_3_4 if name not in METRICS)  # appended: earlier indices stay

MetricFn = Callable[[int, np.ndarray], np.ndarray]


@dataclass(eq=False)
class ImageEval:
    """What `COCOeval.accumulate` needs at maxDets=100, flattened per evaluated detection.

    Detections: `category`, `area`, `image` are indices (k, a, i) into `category_ids`,
    `area_labels` and `image_ids`; `tp`/`fp` are [N, T] flags per IoU threshold.
    `num_gt` [K, A, I] counts the non-ignored ground-truth boxes.
    """

    category: np.ndarray
    area: np.ndarray
    image: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_gt: np.ndarray
    iou_thresholds: np.ndarray
    rec_thresholds: np.ndarray
    area_labels: tuple[str, ...]
    category_ids: np.ndarray
    image_ids: np.ndarray

    @classmethod
    def from_cocoeval(cls, cocoeval: COCOeval) -> ImageEval:
        """Extract from a `COCOeval` after `.evaluate()` (its evalImgs are [k][a][i])."""
        p = cocoeval.params
        cat_ids = p.catIds if p.useCats else [-1]
        max_det = p.maxDets[-1]
        K, A, I, T = len(cat_ids), len(p.areaRng), len(p.imgIds), len(p.iouThrs)
        if len(cocoeval.evalImgs) != K * A * I:
            raise ValueError("run cocoeval.evaluate() with the current params first")
        num_gt = np.zeros((K, A, I), dtype=np.int32)
        idx, scores, tps, fps = [], [], [], []
        for n, e in enumerate(cocoeval.evalImgs):
            if e is None:
                continue
            k, a, i = np.unravel_index(n, (K, A, I))
            num_gt[k, a, i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            s = np.asarray(e["dtScores"][0:max_det], dtype=np.float64)
            dtm = np.asarray(e["dtMatches"])[:, 0:max_det]
            not_ig = np.logical_not(np.asarray(e["dtIgnore"])[:, 0:max_det])
            # as accumulate: a match is any non-zero gt id; ignored detections count as neither
            tps.append(np.logical_and(dtm, not_ig).T)
            fps.append(np.logical_and(np.logical_not(dtm), not_ig).T)
            scores.append(s)
            idx.append(np.tile([k, a, i], (len(s), 1)))
        idx_arr = np.concatenate(idx or [np.zeros((0, 3), int)]).astype(np.int32)
        return cls(
            category=idx_arr[:, 0], area=idx_arr[:, 1], image=idx_arr[:, 2],
            score=np.concatenate(scores or [np.zeros(0)]),
            tp=np.concatenate(tps or [np.zeros((0, T), bool)]),
            fp=np.concatenate(fps or [np.zeros((0, T), bool)]),
            num_gt=num_gt,
            iou_thresholds=np.asarray(p.iouThrs, dtype=np.float64),
            rec_thresholds=np.asarray(p.recThrs, dtype=np.float64),
            area_labels=tuple(p.areaRngLbl),
            category_ids=np.asarray(cat_ids, dtype=np.int64),
            image_ids=np.asarray(p.imgIds, dtype=np.int64),
        )

    def save(self, path: str | PathLike) -> None:
        """Write a compressed .npz (exactly at `path`) that loads without pickle."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path: str | PathLike) -> ImageEval:
        """Read a file written by `save`."""
        with np.load(path, allow_pickle=False) as z:
            values = {f.name: z[f.name] for f in fields(cls)}
        values["area_labels"] = tuple(str(s) for s in values["area_labels"])
        return cls(**values)


class Accumulator:
    """`COCOeval.accumulate` (maxDets=100) for integer image weights, sorted once.

    Detections are sorted by score once per (k, a) segment and each segment gets a
    sentinel at its end (no tp, no fp, precision 0); a call is then a cumulative sum, a
    running max and table lookups over all segments at once, no Python loop.
    """

    def __init__(self, ev: ImageEval) -> None:
        K, A, I = ev.num_gt.shape
        T = len(ev.iou_thresholds)
        self.shape, self.rec_thresholds = (T, len(ev.rec_thresholds), K, A), ev.rec_thresholds
        self.num_gt = ev.num_gt.reshape(K * A, I).astype(np.int64)
        seg = ev.category.astype(np.int64) * A + ev.area
        # A segment without ground truth is always -1, and a detection ignored at every
        # IoU never changes a precision or recall value: keep neither.
        keep = np.flatnonzero((ev.tp | ev.fp).any(axis=1) & (self.num_gt.sum(axis=1) > 0)[seg])
        # pycocotools' order: mergesort by -score over detections concatenated in image
        # order; lexsort is stable, so ties keep their order within an image.
        order = keep[np.lexsort((ev.image[keep], -ev.score[keep], seg[keep]))]
        self.active, inverse, counts = np.unique(seg[order], return_inverse=True, return_counts=True)
        S, N = self.active.size, order.size + self.active.size
        self.last = np.cumsum(counts + 1) - 1  # sentinel positions
        self.start = self.last - counts
        segment_of = np.repeat(np.arange(S), counts + 1)
        # Running-max keys: real part = segment rank, later segments lower, so a max taken
        # from the right restarts at every segment; imaginary part = precision.
        self.key_real = (S - 1 - segment_of).astype(np.float64)
        pos = np.arange(order.size) + inverse  # each earlier segment adds one sentinel
        self.image = np.zeros(N, dtype=np.int64)
        self.image[pos] = ev.image[order]
        self.flags = np.zeros((2 * T, N), dtype=np.int64)  # tp rows, then fp rows
        self.flags[:, pos] = np.concatenate([ev.tp[order].T, ev.fp[order].T])
        # Table from tp count to detection, per segment: a slot for count 0 (its first
        # detection), one per counted tp, one for "never reached" (its sentinel).
        self.slot = np.arange(N) + segment_of + 1
        self.slot_value = np.empty((T, N + S), dtype=np.int64)
        self.slot_value[:, self.slot] = np.arange(N)
        self.slot_value[:, self.start + np.arange(S)] = self.start
        self.slot_value += (np.arange(T) * N)[:, None]  # flat index into [T, N]

    def __call__(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """precision [T, R, K, A] and recall [T, K, A], with each image counted weights[i] times."""
        (T, R, K, A), (S, N) = self.shape, (self.active.size, self.image.size)
        w = np.ones(self.num_gt.shape[1], np.int64) if weights is None else np.asarray(weights)
        if w.shape != self.num_gt.shape[1:] or np.any(w < 0) or np.any(w != np.round(w)):
            raise ValueError(f"weights must be {self.num_gt.shape[1]} non-negative integer counts")
        w = w.astype(np.int64)
        npig_all = self.num_gt @ w  # weighted non-ignored gt per (k, a)
        npig = npig_all[self.active]
        counted = self.flags * w[self.image]
        cum = np.zeros((2 * T, N + 1), dtype=np.int64)
        np.cumsum(counted, axis=1, out=cum[:, 1:])
        base = cum[:, self.start]  # [2T, S] counts before each segment
        total = cum[:T, self.last] - base[:T]  # [T, S] tp per segment
        # Per-segment cumulative tp/fp and the precision curve, as pycocotools computes it.
        local = cum[:, 1:] - np.repeat(base, self.last + 1 - self.start, axis=1)
        key = np.empty((T, N), dtype=np.complex128)
        key.real = self.key_real
        key.imag = local[:T] / (local[T:] + local[:T] + np.spacing(1))
        key.imag[:, self.last] = 0.0
        # complex maximum is lexicographic: an exact running max restarted per segment
        envelope = np.maximum.accumulate(key[:, ::-1], axis=1)[:, ::-1].imag.ravel()
        # searchsorted(rc, recThrs, 'left') with rc = tp / npig is the first detection whose
        # tp count reaches need[s, r], the least integer j with j / npig >= recThr. Looked
        # up once per distinct (s, need) pair, then spread over the R thresholds.
        need = _min_counts(npig, self.rec_thresholds)  # [S, R]
        new = np.ones((S, R), dtype=bool)
        new[:, 1:] = need[:, 1:] != need[:, :-1]
        pairs = np.flatnonzero(new)
        pair_seg = pairs // R
        slot_counts = np.ones((T, N + S), dtype=np.int64)
        slot_counts[:, self.slot] = counted[:T]
        slot_counts[:, self.slot[self.last]] = 1
        table = np.repeat(self.slot_value.ravel(), slot_counts.ravel())
        row_start = np.concatenate([[0], np.cumsum(cum[:T, -1] + 2 * S)[:-1]])
        seg_start = row_start[:, None] + base[:T] + 2 * np.arange(S)  # [T, S]
        level = np.minimum(need.ravel()[pairs], total[:, pair_seg] + 1)  # [T, pairs]
        # Columns: one per pair, then 0 (gt but no counted detection), then -1 (no gt).
        q = np.empty((T, pairs.size + 2))
        q[:, :-2] = envelope[table[seg_start[:, pair_seg] + level]]
        q[:, -2:] = 0.0, -1.0
        which = np.full((R, K * A), pairs.size)
        which[:, self.active] = (np.cumsum(new.ravel()) - 1).reshape(S, R).T
        which[:, npig_all == 0] = pairs.size + 1
        recall = np.zeros((T, K * A))
        recall[:, self.active] = total / np.maximum(npig, 1)
        recall[:, npig_all == 0] = -1.0
        return np.take(q, which, axis=1).reshape(T, R, K, A), recall.reshape(T, K, A)


def _min_counts(npig: np.ndarray, rec_thresholds: np.ndarray) -> np.ndarray:
    """Least integer j with float(j) / npig >= recThr, per segment and threshold [S, R].

    ceil(thr * npig) in floating point is within one of it, so one exact step down and
    one up find it.
    """
    n = np.maximum(npig, 1)[:, None].astype(np.float64)
    thr = np.asarray(rec_thresholds, dtype=np.float64)[None, :]
    j = np.ceil(thr * n)
    j -= (j >= 1) & ((j - 1) / n >= thr)
    j += j / n < thr
    return j.astype(np.int64)


def accumulate(ev: ImageEval, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-off weighted accumulate; build an `Accumulator` to reuse the sort across calls."""
    return Accumulator(ev)(weights)


def _index(values: np.ndarray, target: float) -> int:
    hits = np.flatnonzero(np.isclose(values, target))
    if hits.size != 1:
        raise ValueError(f"IoU threshold {target} not among {values}")
    return int(hits[0])


def _mean_valid(s: np.ndarray) -> float:
    """summarize's mean over entries > -1, in percent; NaN where it would print -1."""
    valid = s[s > -1]
    return float(np.mean(valid)) * 100 if valid.size else float("nan")


def metric_values(precision: np.ndarray, recall: np.ndarray, area_labels: Sequence[str],
                  iou_thresholds: np.ndarray) -> dict[str, float]:
    """The METRICS, in percent, from accumulate's precision [T, R, K, A] and recall [T, K, A]."""
    a = {label: n for n, label in enumerate(area_labels)}
    t = {x: _index(np.asarray(iou_thresholds), x / 100) for x in (75, *TABLE_IOUS)}
    p = precision
    s = {"AP": p[..., a["all"]], "AP50": p[t[50], ..., a["all"]], "AP75": p[t[75], ..., a["all"]],
         "APs": p[..., a["small"]], "APm": p[..., a["medium"]], "APl": p[..., a["large"]],
         "mean AR": recall[..., a["all"]]}
    s |= {f"AP{x} {lb}": p[t[x], ..., a[lb]] for lb in TABLE_SIZES for x in TABLE_IOUS}
    s |= {f"AR{x} {lb}": recall[t[x], :, a[lb]] for lb in TABLE_SIZES for x in TABLE_IOUS}
    s |= {f"mean AR {lb}": recall[..., a[lb]] for lb in TABLE_SIZES[1:]}
    return {name: _mean_valid(s[name]) for name in METRICS}


@dataclass
class Interval:
    """Point difference (a - b) per metric and its bootstrap percentile interval."""

    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int
    replicates: int
    level: float = 0.95


def paired_bootstrap(metric_a: MetricFn, metric_b: MetricFn, num_seeds: int, num_images: int,
                     replicates: int = 1000, level: float = 0.95, rng_seed: int = 0) -> Interval:
    """Percentile interval for mean-over-seeds(metric_a - metric_b).

    Each replicate draws seeds with replacement and one multinomial image resample that
    every drawn seed and both detectors share: seeds and images are crossed factors, and
    pairing cancels what the two detectors have in common.
    """
    if num_seeds < 1 or num_images < 1 or replicates < 1:
        raise ValueError("need at least one seed, one image and one replicate")
    rng = np.random.default_rng(rng_seed)
    ones = np.ones(num_images, dtype=np.int64)
    difference = np.mean([metric_a(s, ones) - metric_b(s, ones) for s in range(num_seeds)], axis=0)
    stats = np.empty((replicates, difference.size))
    for r in range(replicates):
        seeds, counts = np.unique(rng.integers(num_seeds, size=num_seeds), return_counts=True)
        weights = np.bincount(rng.integers(num_images, size=num_images), minlength=num_images)
        diffs = np.array([metric_a(s, weights) - metric_b(s, weights) for s in seeds])
        stats[r] = counts @ diffs / num_seeds
    with warnings.catch_warnings():  # a metric NaN in every replicate stays NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(stats, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return Interval(difference, low, high, num_seeds, replicates, level)


def verdict(interval: Interval, index: int, seeds: int | None = None) -> str:
    """Plain-words reading of metric `index`; `seeds` defaults to `interval.seeds`."""
    if (interval.seeds if seeds is None else seeds) < 2:
        return "training noise not measured"
    if interval.low[index] > 0:
        return "ahead"
    if interval.high[index] < 0:
        return "behind"
    return f"not resolved at {round(interval.level * 100, 6):g}%"


def coco_metric_fn(evals: Sequence[ImageEval]) -> MetricFn:
    """metric(s, weights) -> the METRICS vector of evals[s], for `paired_bootstrap`."""
    if not evals:
        raise ValueError("need at least one ImageEval")
    for ev in evals[1:]:
        if not np.array_equal(ev.image_ids, evals[0].image_ids):
            raise ValueError("evaluations are on different validation images")
    accumulators = [Accumulator(ev) for ev in evals]

    def metric(s: int, weights: np.ndarray) -> np.ndarray:
        ev = evals[s]
        values = metric_values(*accumulators[s](weights), ev.area_labels, ev.iou_thresholds)
        return np.array([values[name] for name in METRICS])

    return metric
