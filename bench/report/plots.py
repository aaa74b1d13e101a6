"""A run's numbers -> figures: one function per plot, each returning a Figure or None.

Figures are built without pyplot (no global state, no GUI backend) and saved without version
metadata, so the same run folder gives the same PNG bytes. Error bars are the 95% intervals of
`intervals` (training and image noise; image noise only with one seed), and the interquartile
range of a latency.
"""
from __future__ import annotations

import io
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .accuracy import like_for_like, paper_subset
from .cost import headline_latency, measured, measured_device
from .intervals import IOUS, SIZES, intervals, run_values
from .load import Run, load_paper
from .table import MISSING

STYLE = {
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8,
}
DPI = 110
_SIZE_LABELS = {"AP": "AP (all)", "APs": "APs (small)", "APm": "APm (medium)", "APl": "APl (large)"}


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0), **kwargs: Any
           ) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()


def figure_png(fig: Figure) -> bytes:
    """PNG bytes without the 'Software' metadata, so the bytes depend on the figure alone."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def colour(run: Run, name: str) -> str:
    return f"C{run.backbones.index(name) % 10}"


def percent_axis(axis: Any) -> None:
    axis.set_major_formatter(PercentFormatter(100, decimals=None))


def _error_bars(run: Run, frame: pd.DataFrame) -> np.ndarray | None:
    """[2, rows, columns] distances below and above each mean to its 95% interval, or None."""
    found = intervals(run)
    if not all(name in found.single for name in frame.index):
        return None
    low = np.array([[found.of(name, metric)[0] for metric in frame.columns] for name in frame.index])
    high = np.array([[found.of(name, metric)[1] for metric in frame.columns] for name in frame.index])
    values = frame.to_numpy(dtype=float)
    return np.clip(np.stack([values - low, high - values]), 0, None)


def _grouped_bars(ax: Any, run: Run, frame: pd.DataFrame, paper: bool, errors: np.ndarray | None) -> None:
    """One group per column, one bar per row (backbone); paper bars hatched and outlined."""
    width = 0.8 / len(frame)
    x = np.arange(len(frame.columns))
    for i, (name, row) in enumerate(frame.iterrows()):
        c = colour(run, name)
        style = {"facecolor": "none", "edgecolor": c, "hatch": "///"} if paper else {"color": c}
        yerr = None if errors is None else errors[:, i, :]
        bars = ax.bar(x + (i - (len(frame) - 1) / 2) * width, row.fillna(0).to_numpy(), width, yerr=yerr,
                      capsize=2, error_kw={"elinewidth": 0.8}, label=f"{name} (paper)" if paper else name, **style)
        ax.bar_label(bars, labels=[MISSING if np.isnan(v) else f"{v:.1f}" for v in row], fontsize=7, padding=1)
    ax.set_xticks(x, [_SIZE_LABELS[column] for column in frame.columns])
    ax.set_ylabel("AP (%)")
    percent_axis(ax.yaxis)
    ax.margins(y=0.15)
    ax.legend(loc="upper left")


def _interval_words(run: Run) -> str:
    one_seed = all(len(run.finished_seeds(name)) < 2 for name in run.finished)
    return "95% interval, image noise only (one seed)" if one_seed else "95% interval, training and image noise"


def plot_ap_by_size(run: Run) -> Figure | None:
    if not run.finished:
        return None
    groups = ["AP", "APs", "APm", "APl"]
    table = like_for_like(run)
    paper = paper_subset(table, run.finished, groups)
    ours = run_values(run)[groups]
    panels = [("This run (bars: " + _interval_words(run) + ")", ours, False, _error_bars(run, ours))]
    if not paper.empty:
        panels.append((f"Paper, {load_paper()[table]['label']} (COCO)", paper, True, None))
    fig, axes = figure(1, len(panels), size=(5.5 * len(panels), 4.0))
    for ax, (title, frame, is_paper, errors) in zip(axes, panels):
        _grouped_bars(ax, run, frame, is_paper, errors)
        ax.set_title(title, wrap=True)
    fig.suptitle("AP by object size (COCO AP, %)")
    return fig


def plot_ap_vs_iou(run: Run) -> Figure | None:
    if not run.finished:
        return None
    values = run_values(run)
    thresholds = [int(iou) / 100 for iou in IOUS]
    fig, axes = figure(1, len(SIZES), size=(11.0, 3.8), sharey=True)
    for ax, size in zip(axes, SIZES):
        curves = values.reindex(columns=[f"AP{iou} {size}" for iou in IOUS])
        for name, curve in curves.iterrows():
            ax.plot(thresholds, curve.to_numpy(), marker="o", markersize=3, color=colour(run, name), label=name)
        if curves.isna().all(axis=None):
            ax.text(0.5, 0.5, "no ground truth of this size", transform=ax.transAxes, ha="center", color="grey")
        for iou in (0.5, 0.85):  # the paper's Table 3 columns
            ax.axvline(iou, linestyle=":", color="grey", linewidth=1)
        ax.set_title(f"{size} objects")
        ax.set_xlabel("IoU threshold")
        ax.set_xticks(thresholds[::2] + [0.85])
    axes[0].set_ylabel("AP (%)")
    percent_axis(axes[0].yaxis)
    axes[0].legend()
    fig.suptitle("AP vs IoU threshold by object size, mean over seeds (dotted: IoU 0.50 and 0.85, the paper's Table 3)")
    return fig


def _tradeoff(run: Run, x: dict[str, tuple[float, float]], xlabel: str, title: str) -> Figure | None:
    """AP against a cost, one labelled point per backbone; x maps backbone -> (value, error bar half-width)."""
    if not run.finished:
        return None
    ap = run_values(run)["AP"]
    points = {name: xy for name, xy in x.items() if name in ap.index and not np.isnan(xy[0])}
    if not points:
        return None
    errors = _error_bars(run, ap.to_frame())
    fig, (ax,) = figure(size=(6.0, 4.2))
    for name, (value, err) in points.items():
        yerr = None if errors is None else errors[:, ap.index.get_loc(name), :]
        ax.errorbar(value, ap[name], xerr=err, yerr=yerr, fmt="o", color=colour(run, name), capsize=3,
                    clip_on=False, zorder=3)
        ax.annotate(name, (value, ap[name]), xytext=(6, 6), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"AP (%; bar: {_interval_words(run)})")
    percent_axis(ax.yaxis)
    ax.margins(0.25)
    for get, set_ in ((ax.get_xlim, ax.set_xlim), (ax.get_ylim, ax.set_ylim)):  # costs and AP are never negative
        low, high = get()
        set_(max(low, 0), high)
    ax.set_title(f"{title}\n(better: up and to the left)")
    return fig


def plot_ap_vs_latency(run: Run) -> Figure | None:
    if run.measurements is None:
        return None
    latency = {name: headline_latency(run, name, "detector") for name in run.backbones}
    return _tradeoff(
        run, {name: (med, iqr / 2) for name, (med, iqr) in latency.items()},
        "detector latency, batch 1, float32 (ms; bar: interquartile range)",
        f"AP vs detector latency on {measured_device(run)}",
    )


def plot_ap_vs_gmacs(run: Run) -> Figure | None:
    if run.measurements is None:
        return None
    size = run.config.profile.measure.detection_size
    gmacs = {name: (measured(run.measurements, "gmacs", backbone=name, target="detector"), 0.0)
             for name in run.backbones}
    return _tradeoff(run, gmacs, f"detector compute at {size} px (GMACs, multiply-adds)", "AP vs detector compute")


def plot_loss_curves(run: Run) -> Figure | None:
    if not run.losses:
        return None
    first = next(iter(run.losses.values()))
    columns = [c for c in first.columns if c.startswith("loss")] + ["lr"]
    ncols = 3
    fig, axes = figure(-(-len(columns) // ncols), ncols, size=(11.0, 6.0), sharex=True)
    for ax, column in zip(axes, columns):
        for name in run.backbones:
            curves = [frame for (backbone, _), frame in run.losses.items() if backbone == name]
            for j, frame in enumerate(curves):  # the legend names each backbone once
                ax.plot(frame["iteration"], frame[column], color=colour(run, name), label=name if j == 0 else None,
                        linewidth=1)
        ax.set_title({"loss": "total loss", "lr": "learning rate"}.get(column, column))
    axes[columns.index("lr")].set_yscale("log")
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # shared by every panel
    axes[0].set_ylabel("loss (window mean)")
    axes[0].legend()
    fig.supxlabel("iteration")
    fig.suptitle("Training losses and learning rate per backbone (one line per seed)")
    return fig
