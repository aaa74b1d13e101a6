"""Is one detector ahead of another? A 95% interval that holds training and image noise, and its verdict.

The unit of replication is the training seed (Bouthillier et al. 2021, "Accounting for variance
in machine learning benchmarks"): the difference of interest is m, the mean over n seeds of the
per-seed paired difference (both detectors trained with the same seed and evaluated on the same
images). Two noises move m:

- training noise: s^2 / n, with s^2 the variance of the n per-seed differences (ddof 1);
- image noise: V_img, the variance of m over image-bootstrap draws with the seeds held fixed
  (one multinomial draw of the validation images per replicate, shared by every detector and
  seed, through `bench.bootstrap`'s exact weighted re-run of COCO's accumulate).

The interval is m ± t(df) * sqrt(s^2 / n + V_img), df by Welch (1947) and Satterthwaite (1946)
with V_img taken as known: df = (s^2/n + V_img)^2 / ((s^2/n)^2 / (n - 1)). s^2 from 2-5 seeds is
itself very noisy, and a plug-in df then runs hot (7.6% false verdicts at 3 seeds when seed noise
is 4x the image noise), so df is computed from the one-sided 75% upper confidence bound of s^2,
(n - 1) s^2 / chi2.ppf(0.25, n - 1): `scripts/calibration.py` measures the result. The p-value
comes from the same t statistic. AP is the pre-stated primary comparison; every other metric is
secondary and its p-value Holm-adjusted (Holm 1979) within the pair. A verdict ("ahead",
"behind") needs three seeds: with one or two the interval cannot hold 95% of the training noise.
With one seed s^2 is unknown and the interval holds image noise only (a normal interval).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .bootstrap import METRICS, ImageEval, replicate_metrics

LEVEL = 0.95
MIN_SEEDS = 3  # fewer: provisional, never ahead or behind
PRIMARY = "AP"
REPLICATES = 500
POWER = 0.8
MAX_SEEDS = 100  # the seeds-needed search stops here
SEED_VARIANCE_BOUND = 0.75  # df from this one-sided upper confidence bound of s^2
UNDEFINED = "undefined"


def provisional(seeds: int) -> str:
    return f"provisional ({seeds} seed{'s' if seeds != 1 else ''}; {MIN_SEEDS} needed)"


def satterthwaite_df(seed_variance: np.ndarray, seeds: int, image_variance: np.ndarray) -> np.ndarray:
    """Welch-Satterthwaite df of s^2/n + V_img, V_img known and s^2 at its upper confidence bound.

    One seed: s^2 unknown, image noise only, df infinite. No noise at all: NaN.
    """
    seed_variance, image_variance = np.asarray(seed_variance, float), np.asarray(image_variance, float)
    if seeds < 2:
        return np.where(image_variance > 0, np.inf, np.nan)
    upper = (seeds - 1) * seed_variance / stats.chi2.ppf(1 - SEED_VARIANCE_BOUND, seeds - 1)
    seed_part = upper / seeds
    with np.errstate(divide="ignore", invalid="ignore"):
        return (seed_part + image_variance) ** 2 / (seed_part ** 2 / (seeds - 1))


@dataclass(frozen=True)
class MetricResult:
    """One metric of one comparison: what a row of the differences table says."""

    metric: str
    role: str  # "primary" or "secondary"
    difference: float
    low: float
    high: float
    p: float  # Holm-adjusted for a secondary metric
    verdict: str
    seeds: int


@dataclass(frozen=True)
class Comparison:
    """Mean-over-seeds difference a - b per metric with its interval, p-value and verdict, all over the same seeds.

    `per_seed` [n, M]: the per-seed differences; `image_variance` [M]: V_img (NaN when the
    per-image matches were not saved, so there is no interval).
    """

    metrics: tuple[str, ...]
    per_seed: np.ndarray
    image_variance: np.ndarray
    level: float = LEVEL

    @property
    def seeds(self) -> int:
        return len(self.per_seed)

    @property
    def difference(self) -> np.ndarray:
        return self.per_seed.mean(axis=0)

    @property
    def seed_variance(self) -> np.ndarray:
        """s^2 of the per-seed differences; 0 with one seed, where it cannot be seen (and df is infinite)."""
        return self.per_seed.var(axis=0, ddof=1) if self.seeds > 1 else np.zeros(len(self.metrics))

    @property
    def standard_error(self) -> np.ndarray:
        return np.sqrt(self.seed_variance / self.seeds + self.image_variance)

    @property
    def df(self) -> np.ndarray:
        return satterthwaite_df(self.seed_variance, self.seeds, self.image_variance)

    @property
    def half_width(self) -> np.ndarray:
        df = self.df
        critical = stats.t.ppf(0.5 + self.level / 2, np.where(np.isnan(df), 1.0, df))
        return np.where(self.standard_error > 0, critical * self.standard_error, 0.0)

    @property
    def low(self) -> np.ndarray:
        return self.difference - self.half_width

    @property
    def high(self) -> np.ndarray:
        return self.difference + self.half_width

    @property
    def raw_p(self) -> np.ndarray:
        """Two-sided p of the t statistic; 1 or 0 where there is no noise at all (the difference is exact)."""
        se, m = self.standard_error, self.difference
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(se > 0, 2 * stats.t.sf(np.abs(m / se), self.df), np.where(m == 0, 1.0, 0.0))
        return np.where(np.isnan(m) | np.isnan(se), np.nan, p)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple("primary" if name == PRIMARY else "secondary" for name in self.metrics)

    @property
    def p(self) -> np.ndarray:
        """p-values: the primary's as is, the secondaries' Holm-adjusted among themselves."""
        p = self.raw_p.copy()
        secondary = np.array([role == "secondary" for role in self.roles])
        p[secondary] = holm(p[secondary])
        return p

    @property
    def verdicts(self) -> tuple[str, ...]:
        return tuple(verdict(d, p, self.seeds, self.level) for d, p in zip(self.difference, self.p))

    def result(self, metric: str) -> MetricResult:
        i = self.metrics.index(metric)
        return MetricResult(metric, self.roles[i], float(self.difference[i]), float(self.low[i]),
                            float(self.high[i]), float(self.p[i]), self.verdicts[i], self.seeds)

    def seeds_needed(self, metric: str, effect: float | None = None) -> int | str:
        """Seeds that would resolve `effect` (default: the observed difference) of `metric`; see `seeds_needed`."""
        i = self.metrics.index(metric)
        return seeds_needed(self.difference[i] if effect is None else effect, self.seed_variance[i],
                            self.image_variance[i], self.seeds, self.level)


def verdict(difference: float, p: float, seeds: int, level: float = LEVEL) -> str:
    """Plain words for one metric: undefined, no interval, provisional, ahead/behind, or not resolved."""
    if np.isnan(difference):
        return UNDEFINED
    if np.isnan(p):
        return "no interval (no evaluation.npz)"
    if seeds < MIN_SEEDS:
        return provisional(seeds)
    if p < 1 - level:
        return "ahead" if difference > 0 else "behind"
    return f"not resolved at {round(level * 100, 6):g}%"


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values over the finite entries of p; NaN stays NaN."""
    p = np.asarray(p, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    steps = (len(order) - np.arange(len(order))) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def power(effect: float, seed_variance: float, image_variance: float, seeds: int | None,
          level: float = LEVEL) -> float:
    """Chance that a true difference `effect` is resolved with `seeds` seeds (None: infinitely many).

    Noncentral t with the verdict's df; normal where df is infinite (image noise only). The far tail is
    P(T > c) with the noncentrality negated (T(nc) = -T(-nc)): scipy's `nct.cdf` returns NaN far out there.
    """
    seed_part = 0.0 if seeds is None else seed_variance / seeds
    se = np.sqrt(seed_part + image_variance)
    if se == 0:
        return 1.0
    df = np.inf if seeds is None else float(satterthwaite_df(seed_variance, seeds, image_variance))
    critical, shift = stats.t.ppf(0.5 + level / 2, df), abs(effect) / se
    if np.isinf(df):
        return float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))
    return float(stats.nct.sf(critical, df, shift) + stats.nct.sf(critical, df, -shift))


def seeds_needed(effect: float, seed_variance: float, image_variance: float, seeds: int,
                 level: float = LEVEL, target: float = POWER) -> int | str:
    """Fewest seeds (3 to MAX_SEEDS) that resolve `effect` with `target` power, given the observed noise.

    The noise is taken as measured (s^2 and V_img as observed; df by the verdict's own rule). Returns
    why not when it cannot be said: too few seeds to measure training noise, no difference to find,
    or image noise alone too large (more validation images needed).
    """
    if seeds < 2 or np.isnan(seed_variance) or np.isnan(image_variance) or np.isnan(effect):
        return "needs 2 seeds to measure"
    if effect == 0:
        return "no difference to resolve"
    if power(effect, seed_variance, image_variance, None, level) < target:
        return "more images needed"
    for n in range(MIN_SEEDS, MAX_SEEDS + 1):
        if power(effect, seed_variance, image_variance, n, level) >= target:
            return n
    return f"more than {MAX_SEEDS}"


def image_draws(num_images: int, replicates: int = REPLICATES, rng_seed: int = 0) -> np.ndarray:
    """[replicates, num_images] multinomial image counts: one bootstrap draw of the validation set per row."""
    rng = np.random.default_rng(rng_seed)
    return rng.multinomial(num_images, np.full(num_images, 1 / num_images), size=replicates)


def image_variance(replicate_differences: np.ndarray) -> np.ndarray:
    """V_img [M] from per-seed differences under each draw [n, R, M]: the variance over draws of their seed mean.

    A draw where a metric is undefined (no ground truth of that kind drawn) is left out of that metric.
    """
    mean = replicate_differences.mean(axis=0)  # [R, M]
    finite = np.isfinite(mean).sum(axis=0)
    with warnings.catch_warnings():  # nanvar warns on a metric undefined in every draw
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.where(finite >= 2, np.nanvar(mean, axis=0, ddof=1), np.nan)


def draw_values(evals: Sequence[ImageEval], replicates: int = REPLICATES, rng_seed: int = 0) -> np.ndarray:
    """[evals, 1 + replicates, METRICS]: each evaluation's metrics on its images, then under each shared draw.

    Every evaluation must be on the same images (checked): one draw re-weights them all.
    """
    num_images = len(evals[0].image_ids) if evals else 0
    weights = np.vstack([np.ones(num_images, np.int64), image_draws(num_images, replicates, rng_seed)])
    return replicate_metrics(evals, weights)


def comparison(values_a: np.ndarray, values_b: np.ndarray | None, metrics: Sequence[str] = METRICS) -> Comparison:
    """a - b from `draw_values` rows of the same seeds in the same order [n, 1 + R, METRICS]; b None: a alone."""
    if values_b is not None and values_b.shape != values_a.shape:
        raise ValueError("need one evaluation per seed for each detector")
    differences = (values_a if values_b is None else values_a - values_b)[..., [METRICS.index(m) for m in metrics]]
    return Comparison(tuple(metrics), differences[:, 0], image_variance(differences[:, 1:]))
