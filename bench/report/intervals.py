"""Every accuracy number of a run, per seed and over seeds, and the intervals around it.

Means and standard deviations are over the seeds a backbone finished. Intervals and verdicts
come from `bench.significance` over the per-image matches each backbone-seed saved
(`evaluation.npz`): training noise from the spread of the per-seed differences, image noise
from bootstrap draws of the validation images shared by every backbone and seed. With one
seed an interval holds image noise only, and no verdict is given below three seeds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..bootstrap import METRICS, ImageEval
from ..significance import Comparison, comparison, draw_values
from .load import Run, percent

ACCURACY_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LOCALISATION_COLUMNS = (
    "AP50 all", "AP85 all", "AP50 small", "AP85 small", "AP50 large", "AP85 large",
    "AR50 small", "AR85 small", "AR50 large", "AR85 large", "mean AR",
)
# What the differences table compares: AP is primary, the rest secondary (Holm); "AP50 all" is AP50 again.
# Every metric a verdict is given for, in one Holm family per pair (the differences table and Tables
# 3-4 alike); "AP50 all" is AP50 under another name and is compared once, as AP50.
COMPARED = tuple(name for name in METRICS if name != "AP50 all")
DUPLICATES = {"AP50 all": "AP50"}
MEAN_AR_STATS = {"small": "ARs", "medium": "ARm", "large": "ARl"}  # AR@100 per size, as "mean AR" for all
SIZES = ("small", "medium", "large")
IOUS = tuple(f"{50 + 5 * i}" for i in range(10))  # "50".."95", as in "AP85 large"


def metric_values(metrics: dict) -> dict[str, float]:
    """One metrics.json -> {"AP": .., "AP85 large": .., "AR50 small": .., "mean AR": ..} in percent."""
    stats = metrics["stats"]
    values = {name: percent(stats[name]) for name in ACCURACY_COLUMNS}
    for kind, by_iou in (("AP", metrics["ap_by_iou"]), ("AR", metrics["ar_by_iou"])):
        for area, curve in by_iou.items():
            values.update({f"{kind}{iou[2:]} {area}": percent(v) for iou, v in curve.items()})
    values["mean AR"] = percent(stats["AR100"])  # the paper's "mean AR": AR@100 over IoU .50:.95
    values.update({f"mean AR {size}": percent(stats[stat]) for size, stat in MEAN_AR_STATS.items()})
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
    """Comparisons over METRICS: per backbone (its metric against 0), per ordered pair (a - b, over COMPARED).

    `pairs[(a, b)].result("AP")` has the difference, low, high, p, verdict and seed count of one
    table row; `single` gives the error bars of the plots.
    """

    single: dict[str, Comparison]
    pairs: dict[tuple[str, str], Comparison]

    def of(self, backbone: str, metric: str) -> tuple[float, float]:
        found = self.single.get(backbone)
        if found is None:
            return np.nan, np.nan
        result = found.result(metric)
        return result.low, result.high


def pairs(names: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def intervals(run: Run) -> Intervals:
    """Every backbone and every pair over the seeds all of them finished (cached on the run).

    Each backbone-seed's metrics are computed once under one set of image draws that all share;
    without every `evaluation.npz` of a comparison its differences come from metrics.json and
    have no interval.
    """
    if "intervals" not in run.cache:
        keys = [key for key in run.metrics if key in run.evaluations]
        drawn = dict(zip(keys, draw_values([ImageEval.load(run.evaluations[key]) for key in keys]))) if keys else {}
        table = seed_values(run)

        def compare(names: tuple[str, ...], metrics: tuple[str, ...]) -> Comparison:
            seeds = run.finished_seeds(*names)
            if all((name, s) in drawn for name in names for s in seeds):
                values = [np.stack([drawn[(name, s)] for s in seeds]) for name in names]
                return comparison(values[0], values[1] if len(values) > 1 else None, metrics)
            per_seed = [table.loc[[(name, s) for s in seeds], list(metrics)].to_numpy(float) for name in names]
            return Comparison(metrics, per_seed[0] - (per_seed[1] if len(per_seed) > 1 else 0.0),
                              np.full(len(metrics), np.nan))

        single = {name: compare((name,), METRICS) for name in run.finished
                  if all((name, s) in drawn for s in run.finished_seeds(name))}
        paired = {pair: compare(pair, COMPARED) for pair in pairs(run.finished) if run.finished_seeds(*pair)}
        run.cache["intervals"] = Intervals(single, paired)
    return run.cache["intervals"]
