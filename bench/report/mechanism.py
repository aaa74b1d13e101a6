"""The paper's mechanism, measured: error breakdown, RoI levels, proposal recall, receptive field, AP over training.

Tables and plots from each backbone-seed's `analysis.json` and `eval.csv` and the run's
`receptive_field.csv`; values are means over the seeds a backbone finished.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .intervals import pairs
from .load import Run
from .plots import colour, figure, percent_axis
from .table import Table

STEPS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = ("all", "small", "medium", "large")
STEP_COLOURS = ("#1f3b73", "#3d6bb3", "#6fa0d8", "#a6c8ea", "#f2c14e", "#e07a5f", "#d9d9d9")


def _rows(run: Run, key: str) -> pd.DataFrame | None:
    """One analysis.json section of every finished backbone-seed, long, with backbone and seed columns."""
    frames = [pd.DataFrame(analysis[key]).assign(backbone=name, seed=seed)
              for (name, seed), analysis in run.analyses.items() if analysis.get(key)]
    return pd.concat(frames, ignore_index=True) if frames else None


def _order(frame: pd.DataFrame, run: Run) -> pd.DataFrame:
    return frame.assign(backbone=pd.Categorical(frame["backbone"], run.backbones, ordered=True))


def error_breakdown_table(run: Run) -> Table | None:
    rows = _rows(run, "error_breakdown")
    if rows is None:
        return None
    wide = (_order(rows, run).groupby(["backbone", "area", "step"], observed=True)["ap"].mean().mul(100)
            .unstack("step").reindex(columns=list(STEPS)).reset_index())
    wide["area"] = pd.Categorical(wide["area"], AREAS, ordered=True)
    wide = wide.sort_values(["backbone", "area"]).rename(columns={"area": "size"})
    skipped = any(a.get("sim_skipped") for a in run.analyses.values())
    sim = ("Sim is skipped (–): the categories have no supercategory structure that groups them, so "
           "supercategory confusion cannot be told from other confusion." if skipped else
           "Sim: confusion with a category of the same supercategory forgiven.")
    return Table(
        "error_breakdown", "Error breakdown by object size (AP %, each step forgiving one more kind of error)",
        wide.astype({"backbone": str, "size": str}),
        note=("COCO analysis of Hoiem et al. as pycocotools' analyze defined it, on pycocotools' COCOeval: C75 and "
              "C50: AP at IoU .75 and .50; Loc: at IoU .10 (localisation errors forgiven, duplicates not); "
              f"{sim} Oth: any class confusion forgiven; BG: background false positives removed; FN: every "
              "miss recovered (1 by definition). Mean over seeds. Loc − C75 is what better localisation "
              "could win; BG − Oth what fewer background detections could."),
    )


def localisation_reading(run: Run) -> list[str]:
    """The paper's reading, tested on large objects: is a backbone's gain where localisation is judged?"""
    rows = _rows(run, "error_breakdown")
    if rows is None:
        return []
    large = rows[rows["area"] == "large"].groupby(["backbone", "step"])["ap"].mean().mul(100)
    lines = []
    for a, b in pairs(run.finished):
        if a not in large.index.get_level_values(0) or b not in large.index.get_level_values(0):
            continue
        gap = {step: large[(a, step)] - large[(b, step)] for step in ("C75", "C50", "Loc")}
        if any(np.isnan(v) for v in gap.values()):
            continue
        where = ("mostly at strict IoU, so it is a localisation gain, as the paper reads it"
                 if abs(gap["C75"]) > abs(gap["Loc"]) + 1 and np.sign(gap["C75"]) == np.sign(gap["C50"])
                 else "as large once localisation errors are forgiven, so it is not mainly a localisation gain")
        lines.append(f"Large objects, {a} − {b}: {gap['C75']:+.1f} AP points at C75, {gap['C50']:+.1f} at C50, "
                     f"{gap['Loc']:+.1f} at Loc: the difference is {where} (point estimates; the differences "
                     "table gives intervals for AP75 and AP50 on large objects).")
    return lines


def roi_levels_table(run: Run) -> Table | None:
    rows = _rows(run, "roi_levels")
    if rows is None:
        return None
    shares = _order(rows, run).groupby(["backbone", "level"], observed=True)["share"].mean().mul(100).unstack("level")
    det = run.config.profile.detector
    return Table(
        "roi_levels", "Which pyramid level the box head pools each RoI from (% of RoIs, validation set)",
        shares.rename(columns=lambda level: f"{level} (%)").reset_index().astype({"backbone": str}),
        note=(f"Evaluation-time RoIs (the RPN's top {det.rpn_post_nms_top_n_test} per image) mapped to P2-P5 by "
              f"k = floor(4 + log2(sqrt(wh) / {det.roi_canonical_scale:g})), the rule the detector pools with; "
              "mean over seeds. DetNet's P4 and P5 are both at stride 16, ResNet's P5 at stride 32: a large share "
              "at P5 is where the two differ most."),
    )


def proposal_recall_table(run: Run) -> Table | None:
    rows = _rows(run, "proposal_recall")
    if rows is None:
        return None
    rows = rows.assign(column=[f"R@{k} IoU {t:.1f}" for k, t in zip(rows["proposals"], rows["iou"])])
    wide = (_order(rows, run).groupby(["backbone", "size", "column"], observed=True, sort=False)["recall"].mean()
            .mul(100).unstack("column").reset_index())
    wide["size"] = pd.Categorical(wide["size"], AREAS, ordered=True)
    return Table(
        "proposal_recall", "RPN proposal recall by object size (%)",
        wide.sort_values(["backbone", "size"]).astype({"backbone": str, "size": str}),
        note=("Share of ground-truth objects (non-crowd) covered by one of the RPN's top-k proposals at IoU ≥ t, "
              "before the box head; sizes by COCO area. The paper's small-object recall argument, at the stage "
              "where it would arise. Mean over seeds."),
    )


def receptive_field_table(run: Run) -> Table | None:
    frame = run.receptive_field
    if frame is None or frame.empty:
        return None
    return Table(
        "receptive_field", "Resolution and receptive field per backbone stage (pixels)", frame,
        note=("Stride: input pixels per feature cell. Theoretical RF: side of the input region the stage's centre "
              "unit can see (measured as the support of its gradient in a positive linear copy of the network). "
              "Effective RF (Luo et al., 2016): Chebyshev radius around the centre unit's position holding 50% / "
              "90% of the mean |gradient| of the centre unit with respect to validation images (as the backbone "
              "sees them, so capped by the image), at the initialisation training started from and with trained "
              "weights (mean over seeds). timm starts every residual block as the identity (its last BatchNorm "
              "weight is 0), so at initialisation the effective RF is the stem's at every stage."),
        formats={"stride": ".0f", "theoretical_rf_px": ".0f"},
    )


def plot_error_breakdown(run: Run) -> Figure | None:
    """Stacked areas of the PR curves per step, one row per backbone, one column per size (COCO analyze's plot)."""
    curves = {name: {} for name in run.finished}
    for (name, _), analysis in run.analyses.items():
        for area, steps in (analysis.get("error_curves") or {}).items():
            curves[name].setdefault(area, []).append(np.array(steps, dtype=float))
    names = [name for name in run.finished if curves[name]]
    if not names:
        return None
    table = error_breakdown_table(run).frame.set_index(["backbone", "size"])
    fig, axes = figure(len(names), len(AREAS), size=(11.0, 2.6 * len(names) + 0.6), sharex=True, sharey=True)
    recall = np.linspace(0, 1, 101)
    for row, name in enumerate(names):
        for col, area in enumerate(AREAS):
            ax = axes[row * len(AREAS) + col]
            with warnings.catch_warnings():  # a step undefined for this size (Sim without supercategories)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.stack(curves[name][area]), axis=0) if area in curves[name] else None
            if mean is None or np.isnan(mean).all():
                ax.text(0.5, 0.5, "no ground truth", ha="center", transform=ax.transAxes, color="grey")
                continue
            for step, tint in zip(reversed(STEPS), reversed(STEP_COLOURS)):
                values = mean[STEPS.index(step)]
                if np.isnan(values).all():
                    continue
                ap = table.at[(name, area), step] if (name, area) in table.index else np.nan
                ax.fill_between(recall, 0, values, color=tint, label=f"{step} {ap:.1f}" if not np.isnan(ap) else step)
            ax.set_title(f"{name}, {area}")
            ax.legend(loc="lower left", fontsize=6)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.suptitle("Error breakdown: precision-recall per step (legend: AP %), mean over seeds")
    return fig


def plot_receptive_field(run: Run) -> Figure | None:
    frame = run.receptive_field
    if frame is None or frame.empty:
        return None
    fig, axes = figure(1, 2, size=(11.0, 4.0))
    for name, rows in frame.groupby("backbone", sort=False):
        x = np.arange(len(rows))
        axes[0].plot(x, rows["stride"], marker="o", color=colour(run, name), label=name)
        axes[1].plot(x, rows["theoretical_rf_px"] / 2, linestyle=":", color=colour(run, name))
        for column, style in (("erf_r90_trained_px", "-"), ("erf_r90_random_px", "--")):
            if column in rows and rows[column].notna().any():
                axes[1].plot(x, rows[column], style, marker="o", color=colour(run, name),
                             label=f"{name}, ERF r90 {'trained' if 'trained' in column else 'random init'}")
        axes[0].set_xticks(x, rows["level"])
        axes[1].set_xticks(x, rows["level"])
    axes[0].set_yscale("log", base=2)
    axes[0].set_ylabel("stride (input pixels per cell)")
    axes[0].set_title("Resolution: stride per FPN input stage")
    axes[1].set_ylabel("radius (input pixels)")
    axes[1].set_title("Receptive field: effective (r90) and theoretical half-side (dotted)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("DetNet's thesis: resolution kept (stride 16) with the receptive field still growing")
    return fig


def plot_ap_vs_iteration(run: Run) -> Figure | None:
    if not run.evals:
        return None
    fig, (ax,) = figure(size=(6.0, 4.0))
    for name in run.backbones:
        for j, frame in enumerate(frame for (backbone, _), frame in run.evals.items() if backbone == name):
            ax.plot(frame["iteration"], 100 * frame["AP"], marker="o", markersize=3, color=colour(run, name),
                    label=name if j == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation AP (%)")
    percent_axis(ax.yaxis)
    ax.legend()
    ax.set_title("Validation AP during training (train.eval_every), one line per seed")
    return fig
