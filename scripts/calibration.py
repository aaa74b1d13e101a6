"""How often a true difference of zero is called "ahead" or "behind": the old interval against the new.

Each simulated comparison has n seeds and I validation images. The per-seed difference is
delta_s + mean_i(x_i): delta_s ~ N(0, seed_sd^2) is training noise, x_i ~ N(0, I * image_se^2)
is what each image adds (the same on every seed, so image_se is the standard error of the mean
over images). The truth is 0; a verdict of ahead/behind is a false one.

- old: the percentile two-level bootstrap detbench used before issue 15 (see git history of
  bench/bootstrap.py, `paired_bootstrap`): each replicate resamples the seeds with replacement and
  the images by one multinomial draw, the interval is the 2.5 and 97.5 percentiles, a verdict
  whenever it excludes 0 with two seeds or more. Written here vectorised, as the comparator only.
- new: `bench.significance` itself: V_img from the same kind of image draws with the seeds held
  fixed, then its `Comparison` (t interval, Welch-Satterthwaite df) and `verdict` (three seeds).

    python scripts/calibration.py [--comparisons 2000] [--ratios 8,2,1,0.5] [--quick]
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.significance import Comparison, image_draws, image_variance, verdict

SEEDS = (2, 3, 5)
IMAGES = 200
OLD_REPLICATES = 1000  # what the old report drew


def old_false_rate(deltas: np.ndarray, images: np.ndarray, rng: np.random.Generator, replicates: int) -> float:
    """Share of comparisons where the old percentile interval excludes 0; deltas [C, n], images [C, I]."""
    count, n = deltas.shape
    seeds = rng.integers(n, size=(count, replicates, n))
    seed_means = np.take_along_axis(deltas[:, None, :], seeds, axis=2).mean(axis=2)  # [C, B]
    draws = image_draws(images.shape[1], replicates, int(rng.integers(2**31)))
    stats = seed_means + images @ draws.T / images.shape[1]
    low, high = np.percentile(stats, [2.5, 97.5], axis=1)
    return float(np.mean((low > 0) | (high < 0)))


def new_false_rate(deltas: np.ndarray, images: np.ndarray, rng: np.random.Generator, replicates: int) -> float:
    """Share of comparisons that bench.significance calls ahead or behind (each comparison one 'metric')."""
    count, n = deltas.shape
    num_images = images.shape[1]
    draws = np.vstack([np.ones(num_images), image_draws(num_images, replicates, int(rng.integers(2**31)))])
    image_means = images @ draws.T / num_images  # [C, 1 + R]: the same on every seed
    per_seed = deltas.T[:, :, None] + image_means[None]  # [n, C, 1 + R]
    found = Comparison(tuple(map(str, range(count))), per_seed[:, :, 0],
                       image_variance(per_seed[:, :, 1:].transpose(0, 2, 1)))
    verdicts = [verdict(d, p, n) for d, p in zip(found.difference, found.raw_p)]
    return float(np.mean([v in ("ahead", "behind") for v in verdicts]))


def cells(ratios: list[float]) -> list[tuple[str, float, float]]:
    """(label, seed sd of the per-seed difference, image SE of the mean difference)."""
    rows = [("training noise only", 1.0, 0.0), ("seed sd 4x the image SE", 4.0, 1.0),
            ("like the committed 2-seed default run (seed sd 1.3, image SE 0.67)", 1.3, 0.67)]
    return rows + [(f"seed sd {r:g}x the image SE", r, 1.0) for r in ratios if r != 4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=2000, help="simulated comparisons per cell")
    parser.add_argument("--ratios", default="", help="extra rows: seed sd / image SE, comma-separated")
    parser.add_argument("--quick", action="store_true", help="200 comparisons, 200 replicates: a smoke test")
    args = parser.parse_args()
    count = 200 if args.quick else args.comparisons
    old_replicates, new_replicates = (200, 200) if args.quick else (OLD_REPLICATES, 500)
    rng = np.random.default_rng(0)
    ratios = [float(r) for r in args.ratios.split(",") if r]
    header = [f"old {n}" for n in SEEDS] + [f"new {n}" for n in SEEDS]
    print(f"False ahead/behind rate, true difference 0, {count} comparisons per cell, {IMAGES} images "
          f"(Monte Carlo SE about {np.sqrt(0.05 * 0.95 / count):.3f} at 0.05); columns: method and seeds")
    print("| noise | " + " | ".join(header) + " | nominal |")
    print("|---|" + "---:|" * (len(header) + 1))
    for label, seed_sd, image_se in cells(ratios):
        old, new = [], []
        for n in SEEDS:
            deltas = rng.normal(0, seed_sd, size=(count, n))
            images = rng.normal(0, image_se * np.sqrt(IMAGES), size=(count, IMAGES))
            old.append(old_false_rate(deltas, images, rng, old_replicates))
            new.append(new_false_rate(deltas, images, rng, new_replicates))
        print(f"| {label} | " + " | ".join(f"{r:.3f}" for r in old + new) + " | 0.05 |")


if __name__ == "__main__":
    main()
