"""Tables of what the detectors found: accuracy, localisation, differences with verdicts, per category.

Each function takes a `Run` and returns a `Table`, or None when the run lacks its inputs.
Run rows are means over seeds (± standard deviation with two or more seeds); paper rows are
the paper's numbers and labelled so.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..significance import LEVEL, MIN_SEEDS, PRIMARY, REPLICATES
from .intervals import (
    ACCURACY_COLUMNS,
    LOCALISATION_COLUMNS,
    intervals,
    run_spread,
    run_values,
    seed_values,
)
from .load import Run, load_paper, percent
from .table import MISSING, Table


def paper_values(table: str) -> pd.DataFrame:
    """One of the paper's tables as a frame: one row per backbone, columns as in this report."""
    return pd.DataFrame(load_paper()[table]["rows"]).T


def like_for_like(run: Run) -> str:
    """The paper table trained like this run: ImageNet weights (Table 1) or from scratch (Table 2)."""
    return "table1" if run.pretrained else "table2"


def paper_subset(table: str, backbones: Iterable[str], columns: Iterable[str]) -> pd.DataFrame:
    """The paper's values for those of `backbones` it reports, in their order."""
    frame = paper_values(table).reindex(columns=list(columns))
    return frame.loc[[name for name in backbones if name in frame.index]]


def paper_rows(table: str, backbones: Iterable[str], columns: Iterable[str], label: str | None = None) -> pd.DataFrame:
    """The paper's rows for the run's backbones, labelled "<backbone> (paper, <label>)"."""
    label = label or load_paper()[table]["label"]
    return paper_subset(table, backbones, columns).rename(index=lambda name: f"{name} (paper, {label})")


def _seeds_note(run: Run) -> str:
    counts = {len(run.finished_seeds(name)) for name in run.finished}
    if counts == {1}:
        return "One training seed: the values are that run's, with no spread over seeds."
    return "Run rows: mean ± standard deviation over the training seeds each backbone finished."


def _with_spread(run: Run, columns: tuple[str, ...], paper: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    values = run_values(run).reindex(columns=list(columns))
    spread = run_spread(run).reindex(columns=list(columns)).reindex(values.index.tolist() + paper.index.tolist())
    frame = pd.concat([values, paper]).rename_axis("backbone").reset_index()
    return frame, spread.reset_index(drop=True)


def accuracy_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    main = like_for_like(run)
    others = [t for t in ("table1", "table2", "test_dev") if t != main]
    paper = pd.concat([paper_rows(t, run.finished, ACCURACY_COLUMNS) for t in (main, *others)])
    frame, spread = _with_spread(run, ACCURACY_COLUMNS, paper)
    return Table(
        "accuracy", "Accuracy: COCO box AP (%)", frame, spread=spread,
        note=(
            f"AP in percent (COCOeval × 100), averaged over IoU .50:.95; APs/APm/APl by object area. "
            f"{_seeds_note(run)} Rows marked paper: the DetNet paper (arXiv:1804.06215) on COCO. "
            f"Like-for-like for this run: {load_paper()[main]['label']}; the other paper rows are for reference."
        ),
    )


def localisation_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    paper = pd.concat([paper_rows("table3", run.finished, LOCALISATION_COLUMNS, "Tables 3 and 4"),
                       paper_rows("table4", run.finished, LOCALISATION_COLUMNS, "Tables 3 and 4")])
    paper = paper.groupby(level=0, sort=False).first()  # one row per backbone with Table 3's and 4's columns
    frame, spread = _with_spread(run, LOCALISATION_COLUMNS, paper)
    return Table(
        "localisation", "Localisation and recall: AP and AR at IoU 0.50 and 0.85 (%)", frame, spread=spread,
        note=(
            "Percent. AP50/AP85: AP at a single IoU threshold (maxDets 100); AR50/AR85: recall at that IoU; "
            "mean AR: AR@100 averaged over IoU .50:.95. Sizes by COCO area: small < 32², large > 96² pixels. "
            f"{_seeds_note(run)} Paper rows: DetNet paper, arXiv:1804.06215, Tables 3 and 4 "
            "(which report only some of these columns)."
        ),
    )


def _paper_difference(a: str, b: str, metric: str, tables: tuple[str, ...]) -> tuple[float, str]:
    """The paper's a - b for `metric` from the first of `tables` that has both, with its label."""
    for table in tables:
        paper = paper_values(table)
        if a in paper.index and b in paper.index and metric in paper.columns:
            value = paper.at[a, metric] - paper.at[b, metric]
            if not np.isnan(value):
                return value, load_paper()[table]["label"]
    return np.nan, ""


def _same_direction(verdict: str, ours: float, theirs: float) -> str:
    """Only a resolved difference has a direction to compare."""
    if verdict not in ("ahead", "behind") or np.isnan(theirs):
        return MISSING
    return "yes" if np.sign(ours) == np.sign(theirs) else "no"


# The rows of this table; Tables 3-4 (paper_tables.py) show the other compared metrics.
DIFFERENCE_ROWS = tuple(name for name in ACCURACY_COLUMNS + LOCALISATION_COLUMNS if name != "AP50 all")


def differences_table(run: Run) -> Table | None:
    """Every pair, every compared metric: difference, interval, p, verdict (one Comparison per pair), the paper's."""
    sources = (like_for_like(run), "table3", "table4")
    rows = []
    for (a, b), comparison in intervals(run).pairs.items():
        for metric in DIFFERENCE_ROWS:
            r = comparison.result(metric)
            paper, label = _paper_difference(a, b, metric, sources)
            rows.append({
                "pair": f"{a} − {b}", "metric": metric, "role": r.role, "difference (points)": r.difference,
                "CI low": r.low, "CI high": r.high, "p": r.p, "seeds": r.seeds, "verdict": r.verdict,
                "paper (points)": paper, "paper source": label,
                "same direction as paper": _same_direction(r.verdict, r.difference, paper),
            })
    if not rows:
        return None
    level = f"{LEVEL:.0%}"
    return Table(
        "differences", f"Differences between backbones with {level} intervals (points)", pd.DataFrame(rows),
        note=(
            f"Mean over the seeds both backbones finished of the per-seed difference, in percentage points of AP or "
            f"AR. {level} interval: difference ± t(df) × √(s²/n + V_img), s² the variance of the n per-seed "
            f"differences (training noise), V_img the variance of the mean difference over {REPLICATES} bootstrap "
            "draws of the validation images with the seeds held fixed, the same draw for every backbone and seed "
            "(image noise); df by Welch-Satterthwaite from an upper confidence bound of s². With one seed the "
            f"interval holds image noise only. {PRIMARY} is the pre-stated primary comparison; every other row is "
            "secondary and its p is Holm-adjusted over every secondary metric of the pair (these rows and the cells of "
            "Tables 3-4, one family). Verdict: ahead / behind when "
            f"p < {1 - LEVEL:.2f} with at least {MIN_SEEDS} seeds; provisional with fewer (never ahead or behind); "
            "undefined where the metric has no ground truth. Paper: the paper's difference (like-for-like table "
            "first, then Tables 3 and 4); 'same direction' compares signs, for resolved rows only."
        ),
        formats={"difference (points)": "+.1f", "CI low": "+.1f", "CI high": "+.1f", "p": ".3g",
                 "paper (points)": "+.1f", "seeds": ".0f"},
    )


def per_category_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    per_seed = pd.DataFrame({key: {cat: percent(ap) for cat, ap in m["per_category"].items()}
                             for key, m in run.metrics.items()})
    frame = per_seed.T.groupby(level=0, sort=False).mean().T.reindex(columns=run.finished)
    return Table(
        "per_category", "Per-category AP (%)", frame.rename_axis("category").reset_index(),
        note="AP@[.50:.95] per category over all object sizes, in percent, mean over seeds; – where the category "
        "has no ground truth.",
    )


def _training_row(metrics: dict[str, Any]) -> dict[str, Any]:
    train = metrics["train"]
    return {
        "iterations": train["iterations"],
        "training time (s)": train.get("seconds"),
        "training images/s": train.get("images_per_s"),
        "final loss": train.get("final_loss"),
        "evaluation time (s)": metrics["eval_seconds"],
        "val images": metrics["num_images"],
        "detections": metrics["num_detections"],
    }


def training_table(run: Run) -> Table | None:
    if not run.metrics:
        return None
    rows = [{"backbone": name, "seed": seed, **_training_row(run.metrics[(name, seed)])}
            for seed in run.seeds for name in run.backbones if (name, seed) in run.metrics]
    return Table(
        "training", "Training and evaluation", pd.DataFrame(rows),
        note="Wall-clock seconds on the run's device; final loss: the total training loss at the last iteration.",
        formats={"seed": ".0f", "iterations": ".0f", "training images/s": ".2f", "final loss": ".3f",
                 "val images": ".0f", "detections": ".0f"},
    )


def fairness_table(run: Run) -> Table | None:
    """What each backbone started from and how it was trained: the audit recorded in config.yaml."""
    audit = run.config.audit
    if not audit:
        return None
    decay = run.config.profile.train
    rows = [{
        "backbone": name,
        "weights": entry.weights_file or "none (from scratch)",
        "weights sha256": (entry.weights_sha256 or MISSING)[:16],
        "norm": entry.norm, "stem frozen": "yes" if entry.frozen_stem else "no",
        "tensors with weight decay": entry.decayed_tensors,
        "norm/bias tensors": entry.undecayed_tensors, "frozen tensors": entry.frozen_tensors,
    } for name, entry in audit.items()]
    return Table(
        "fairness", "Fairness audit: weights, normalisation, weight decay", pd.DataFrame(rows),
        note=(f"Weight decay {decay.weight_decay:g} on weights, {decay.norm_bias_weight_decay:g} on "
              "norm weights and biases (1-D parameters and biases, timm's rule). sha256: first 16 hex digits of "
              "the weights file. norm: batch = BatchNorm trained, frozen = statistics and affine fixed (paper "
              "Table 1)."),
        formats={"tensors with weight decay": ".0f", "norm/bias tensors": ".0f", "frozen tensors": ".0f"},
    )


def seed_table(run: Run) -> Table | None:
    """AP per seed, so a reader sees the training noise the intervals contain."""
    if len(run.seeds) < 2 or not run.metrics:
        return None
    frame = seed_values(run)["AP"].unstack("seed").reindex(run.finished)
    frame.columns = [f"AP seed {seed}" for seed in frame.columns]
    return Table("seeds", "AP per training seed (%)", frame.rename_axis("backbone").reset_index(),
                 note="Box AP@[.50:.95] of each backbone with each training seed; – where it did not finish.")

