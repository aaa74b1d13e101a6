"""Every accuracy number of a run, per seed and over seeds, and the intervals around it.

Means and standard deviations are over the seeds a backbone finished. Intervals come from the
paired two-level bootstrap of `bench.bootstrap` over the per-image matches each backbone-seed
saved (`evaluation.npz`): seeds resampled, then validation images, the same draws for every
backbone, so an interval holds training noise and evaluation noise together. With one seed
it holds evaluation noise only, and the verdict says that training noise was not measured.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..bootstrap import METRICS, ImageEval, Interval, coco_metric_fn, paired_bootstrap, verdict
from .load import Run, percent

ACCURACY_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LOCALISATION_COLUMNS = (
    "AP50 all", "AP85 all", "AP50 small", "AP85 small", "AP50 large", "AP85 large",
    "AR50 small", "AR85 small", "AR50 large", "AR85 large", "mean AR",
)
SIZES = ("small", "medium", "large")
IOUS = tuple(f"{50 + 5 * i}" for i in range(10))  # "50".."95", as in "AP85 large"
REPLICATES = 1000
LEVEL = 0.95


def metric_values(metrics: dict) -> dict[str, float]:
    """One metrics.json -> {"AP": .., "AP85 large": .., "AR50 small": .., "mean AR": ..} in percent."""
    stats = metrics["stats"]
    values = {name: percent(stats[name]) for name in ACCURACY_COLUMNS}
    for kind, by_iou in (("AP", metrics["ap_by_iou"]), ("AR", metrics["ar_by_iou"])):
        for area, curve in by_iou.items():
            values.update({f"{kind}{iou[2:]} {area}": percent(v) for iou, v in curve.items()})
    values["mean AR"] = percent(stats["AR100"])  # the paper's "mean AR": AR@100 over IoU .50:.95
    return values


def seed_values(run: Run) -> pd.DataFrame:
    """Every accuracy number in percent, one row per finished (backbone, seed)."""
    rows = {key: metric_values(metrics) for key, metrics in run.metrics.items()}
    frame = pd.DataFrame(rows).T
    frame.index = pd.MultiIndex.from_tuples(list(rows), names=["backbone", "seed"])
    return frame


def run_values(run: Run) -> pd.DataFrame:
    """Means over each backbone's finished seeds, one row per finished backbone."""
    return seed_values(run).groupby(level="backbone", sort=False).mean().reindex(run.finished)


def run_spread(run: Run) -> pd.DataFrame:
    """Standard deviation over seeds (ddof 1); NaN where a backbone has one seed."""
    return seed_values(run).groupby(level="backbone", sort=False).std(ddof=1).reindex(run.finished)


@dataclass
class Intervals:
    """95% intervals: per backbone (its metric), per ordered pair (a - b), over METRICS."""

    single: dict[str, Interval]
    pairs: dict[tuple[str, str], Interval]

    def of(self, backbone: str, metric: str) -> tuple[float, float]:
        found = self.single.get(backbone)
        return (np.nan, np.nan) if found is None else (found.low[METRICS.index(metric)], found.high[METRICS.index(metric)])


def pairs(names: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def intervals(run: Run, replicates: int = REPLICATES) -> Intervals:
    """Bootstrap every backbone and every pair over the seeds both finished (cached on the run)."""
    if "intervals" not in run.cache:
        evaluations = {key: ImageEval.load(path) for key, path in run.evaluations.items()}

        def bootstrap(names: tuple[str, ...]) -> Interval | None:
            """One backbone against zero (its own interval), or a pair, over the seeds all of them have."""
            seeds = [s for s in run.seeds if all((name, s) in evaluations for name in names)]
            if not seeds:
                return None
            fns = [coco_metric_fn([evaluations[(name, s)] for s in seeds]) for name in names]
            num_images = len(evaluations[(names[0], seeds[0])].image_ids)
            return paired_bootstrap(fns[0], fns[1] if len(fns) > 1 else _zero, len(seeds), num_images,
                                    replicates=replicates, level=LEVEL, rng_seed=0)

        single = {name: found for name in run.finished if (found := bootstrap((name,))) is not None}
        paired = {pair: found for pair in pairs(run.finished) if (found := bootstrap(pair)) is not None}
        run.cache["intervals"] = Intervals(single, paired)
    return run.cache["intervals"]


def _zero(seed: int, weights: np.ndarray) -> np.ndarray:
    return np.zeros(len(METRICS))


def verdict_text(interval: Interval, metric: str) -> str:
    return verdict(interval, METRICS.index(metric))
