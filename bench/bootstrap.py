"""COCO box metrics of a detector under re-weighted validation images: the image half of the noise.

A COCO number depends on which validation images were drawn. `bench.significance` measures
that by re-weighting the images (a bootstrap draw), which needs COCO's metrics for hundreds of
weightings. Re-running pycocotools per weighting is far too slow, so `ImageEval` keeps the
per-detection outcome of `COCOeval.evaluate()` and `Accumulator` redoes `COCOeval.accumulate()`
(maxDets=100) for a batch of integer image weightings in a few vectorised numpy passes; with
unit weights it reproduces pycocotools exactly.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
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

CHUNK_BYTES = 4 * 2**20  # work per batch of weighted accumulates: cache-sized, fastest of 1 B-64 MiB measured


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
        """precision [T, R, K, A] and recall [T, K, A], with each image counted weights[i] times.

        `weights` [B, I] (a batch of draws) gives precision [B, T, R, K, A] and recall [B, T, K, A],
        the same values as one call per row; `chunks` yields them a few rows at a time.
        """
        w = np.ones(self.num_gt.shape[1], np.int64) if weights is None else np.asarray(weights)
        parts = list(self.chunks(w))
        precision, recall = parts[0] if len(parts) == 1 else (np.concatenate(arrays) for arrays in zip(*parts))
        return (precision, recall) if w.ndim == 2 else (precision[0], recall[0])

    def chunks(self, weights: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(precision, recall) for successive row blocks of weights [B, I], about CHUNK_BYTES of work each."""
        num_images = self.num_gt.shape[1]
        w = np.asarray(weights)
        if w.ndim not in (1, 2) or w.shape[-1] != num_images or np.any(w < 0) or np.any(w != np.round(w)):
            raise ValueError(f"weights must be {num_images} non-negative integer counts (or rows of them)")
        batch = w.astype(np.int64).reshape(-1, num_images)
        (T, R, K, A), N = self.shape, self.image.size
        rows = max(1, CHUNK_BYTES // (8 * T * max(12 * N, R * K * A)))
        for i in range(0, len(batch), rows):
            yield self._batch(batch[i:i + rows])

    def _batch(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every row of w [B, I] at once: the arrays of one weighting with a leading B axis."""
        (T, R, K, A), (S, N), B = self.shape, (self.active.size, self.image.size), len(w)
        npig_all = w @ self.num_gt.T  # [B, K*A] weighted non-ignored gt
        npig = npig_all[:, self.active]
        counted = self.flags[None] * w[:, self.image][:, None, :]  # [B, 2T, N]
        cum = np.zeros((B, 2 * T, N + 1), dtype=np.int64)
        np.cumsum(counted, axis=2, out=cum[..., 1:])
        base = cum[..., self.start]  # [B, 2T, S] counts before each segment
        total = cum[:, :T, self.last] - base[:, :T]  # [B, T, S] tp per segment
        # Per-segment cumulative tp/fp and the precision curve, as pycocotools computes it.
        local = cum[..., 1:] - np.repeat(base, self.last + 1 - self.start, axis=2)
        key = np.empty((B, T, N), dtype=np.complex128)
        key.real = self.key_real
        key.imag = local[:, :T] / (local[:, T:] + local[:, :T] + np.spacing(1))
        key.imag[..., self.last] = 0.0
        # complex maximum is lexicographic: an exact running max restarted per segment
        envelope = np.maximum.accumulate(key[..., ::-1], axis=2)[..., ::-1].imag.ravel()
        # searchsorted(rc, recThrs, 'left') with rc = tp / npig is the first detection whose
        # tp count reaches need[b, s, r], the least integer j with j / npig >= recThr. Looked
        # up once per distinct (b, s, need), then spread over the R thresholds.
        need = _min_counts(npig, self.rec_thresholds)  # [B, S, R]
        new = np.ones((B, S, R), dtype=bool)
        new[..., 1:] = need[..., 1:] != need[..., :-1]
        pairs = np.flatnonzero(new)
        pair_row, pair_seg = pairs // (S * R), pairs // R % S
        slot_counts = np.ones((B, T, N + S), dtype=np.int64)
        slot_counts[..., self.slot] = counted[:, :T]
        slot_counts[..., self.slot[self.last]] = 1
        slot_value = self.slot_value[None] + (np.arange(B) * T * N)[:, None, None]  # flat index into [B, T, N]
        table = np.repeat(slot_value.ravel(), slot_counts.ravel())
        row_start = np.concatenate([[0], np.cumsum(cum[:, :T, -1] + 2 * S)[:-1]]).reshape(B, T)
        seg_start = (row_start[..., None] + base[:, :T] + 2 * np.arange(S)).transpose(1, 0, 2)  # [T, B, S]
        level = np.minimum(need.ravel()[pairs], total.transpose(1, 0, 2)[:, pair_row, pair_seg] + 1)  # [T, pairs]
        found = envelope[table[seg_start[:, pair_row, pair_seg] + level]]
        # Spread per row (a gather from that row's few columns stays in cache): one column per
        # pair, then 0 (gt but no counted detection), then -1 (no gt).
        bounds = np.searchsorted(pair_row, np.arange(B + 1))
        pair_index = (np.cumsum(new.reshape(B, -1), axis=1) - 1).reshape(B, S, R).transpose(0, 2, 1)
        precision = np.empty((B, T, R, K * A))
        for b in range(B):
            count = bounds[b + 1] - bounds[b]
            q = np.empty((T, count + 2))
            q[:, :-2] = found[:, bounds[b]:bounds[b + 1]]
            q[:, -2:] = 0.0, -1.0
            which = np.full((R, K * A), count)
            which[:, self.active] = pair_index[b]
            which[:, npig_all[b] == 0] = count + 1
            np.take(q, which, axis=1, out=precision[b])
        recall = np.zeros((B, T, K * A))
        recall[..., self.active] = total / np.maximum(npig, 1)[:, None, :]
        recall = np.where((npig_all == 0)[:, None, :], -1.0, recall)
        return precision.reshape(B, T, R, K, A), recall.reshape(B, T, K, A)


def _min_counts(npig: np.ndarray, rec_thresholds: np.ndarray) -> np.ndarray:
    """Least integer j with float(j) / npig >= recThr, per segment and threshold [..., S, R].

    ceil(thr * npig) in floating point is within one of it, so one exact step down and
    one up find it.
    """
    n = np.maximum(npig, 1)[..., None].astype(np.float64)
    thr = np.asarray(rec_thresholds, dtype=np.float64)
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


def _mean_valid(s: np.ndarray) -> np.ndarray:
    """summarize's mean over entries > -1 per row of s [B, ...], in percent; NaN where it would print -1."""
    valid = s > -1
    count = valid.reshape(len(s), -1).sum(axis=1)
    total = np.where(valid, s, 0.0).reshape(len(s), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count * 100, np.nan)


def metric_matrix(precision: np.ndarray, recall: np.ndarray, area_labels: Sequence[str],
                  iou_thresholds: np.ndarray) -> np.ndarray:
    """[B, METRICS] in percent from a batch of precision [B, T, R, K, A] and recall [B, T, K, A]."""
    a = {label: n for n, label in enumerate(area_labels)}
    t = {x: _index(np.asarray(iou_thresholds), x / 100) for x in (75, *TABLE_IOUS)}
    p = precision
    s = {"AP": p[..., a["all"]], "AP50": p[:, t[50], ..., a["all"]], "AP75": p[:, t[75], ..., a["all"]],
         "APs": p[..., a["small"]], "APm": p[..., a["medium"]], "APl": p[..., a["large"]],
         "mean AR": recall[..., a["all"]]}
    s |= {f"AP{x} {lb}": p[:, t[x], ..., a[lb]] for lb in TABLE_SIZES for x in TABLE_IOUS}
    s |= {f"AR{x} {lb}": recall[:, t[x], :, a[lb]] for lb in TABLE_SIZES for x in TABLE_IOUS}
    s |= {f"mean AR {lb}": recall[..., a[lb]] for lb in TABLE_SIZES[1:]}
    return np.stack([_mean_valid(s[name]) for name in METRICS], axis=1)


def metric_values(precision: np.ndarray, recall: np.ndarray, area_labels: Sequence[str],
                  iou_thresholds: np.ndarray) -> dict[str, float]:
    """The METRICS, in percent, from accumulate's precision [T, R, K, A] and recall [T, K, A]."""
    row = metric_matrix(precision[None], recall[None], area_labels, iou_thresholds)[0]
    return {name: float(value) for name, value in zip(METRICS, row)}


def replicate_metrics(evals: Sequence[ImageEval], weights: np.ndarray) -> np.ndarray:
    """[len(evals), B, METRICS]: each evaluation's metrics under every image weighting weights [B, I].

    Every evaluation must be on the same images in the same order, since one weight vector
    stands for one draw of images for all of them.
    """
    if not evals:
        raise ValueError("need at least one ImageEval")
    for ev in evals[1:]:
        if not np.array_equal(ev.image_ids, evals[0].image_ids):
            raise ValueError("evaluations are on different validation images")
    return np.stack([np.concatenate([metric_matrix(*arrays, ev.area_labels, ev.iou_thresholds)
                                     for arrays in Accumulator(ev).chunks(np.atleast_2d(weights))])
                     for ev in evals])
