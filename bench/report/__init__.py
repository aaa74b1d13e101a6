"""A run folder -> tables (CSV + Markdown), plots (PNG), `report.md` and a self-contained `report.html`.

Everything is re-rendered from the files in the run folder alone, so a report can be rebuilt
or restyled long after the run, and rendering one folder twice gives byte-identical files:
nothing reads the clock or the folder's absolute path, bootstrap draws are seeded, and PNGs
carry no version metadata. What an interrupted run lacks is named in the report and its
tables and plots skipped. The paper's figures come from the package data file `paper.yaml`.

    python -m bench.report RUN_DIR
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure as MplFigure

from ..layout import RunLayout
from . import accuracy, cost, mechanism, paper_tables, plots, pretraining
from .describe import caveat, data_warnings, describe_run, like_for_like_sentence, verdicts
from .load import Run, load_paper, load_run, missing_inputs
from .render import Figure, write_outputs
from .table import Table

TABLES: tuple[Callable[[Run], Table | None], ...] = (
    accuracy.fairness_table, accuracy.training_table, cost.environment_table, accuracy.accuracy_table,
    accuracy.seed_table, accuracy.localisation_table, paper_tables.table3, paper_tables.table4,
    paper_tables.table3_differences, paper_tables.table4_differences, accuracy.differences_table, cost.latency_differences_table,
    cost.cost_table, cost.speed_table, cost.latency_table, cost.compute_by_module_table, accuracy.per_category_table,
    mechanism.error_breakdown_table, mechanism.roi_levels_table, mechanism.proposal_recall_table,
    mechanism.receptive_field_table,
    pretraining.pretraining_table,
)


@dataclass(frozen=True)
class PlotSpec:
    name: str  # file stem under plots/
    draw: Callable[[Run], MplFigure | None]
    caption: str
    needs: str  # what the plot is drawn from, said when it is skipped


PLOTS = (
    PlotSpec("ap_by_size", plots.plot_ap_by_size,
             "AP by object size per backbone, mean over seeds with its 95% interval; hatched bars: the like-for-like "
             "paper table, on COCO.", "a finished backbone's metrics.json"),
    PlotSpec("ap_vs_iou", plots.plot_ap_vs_iou,
             "AP at each IoU threshold, per object size. The paper's localisation argument: DetNet-59's gain "
             "over ResNet-50 on large objects grows at high IoU.", "a finished backbone's metrics.json"),
    PlotSpec("ap_vs_gmacs", plots.plot_ap_vs_gmacs,
             "Accuracy against detector compute; up and to the left is better.",
             "measurements.csv with detector compute"),
    PlotSpec("ap_vs_latency", plots.plot_ap_vs_latency,
             "Accuracy against detector latency (batch 1, float32) on the run's device; up and to the left is better.",
             "measurements.csv with detector latency"),
    PlotSpec("error_breakdown", mechanism.plot_error_breakdown,
             "Precision-recall per object size as each kind of error is forgiven (C75 → FN), one row per backbone.",
             "a backbone's analysis.json"),
    PlotSpec("receptive_field", mechanism.plot_receptive_field,
             "Stride and receptive field per FPN input stage: DetNet keeps stride 16 while its receptive field grows.",
             RunLayout(Path()).receptive_field.name),
    PlotSpec("ap_vs_iteration", mechanism.plot_ap_vs_iteration,
             "Validation AP during training, measured every `train.eval_every` iterations.",
             "eval.csv (run with --set train.eval_every=N)"),
    PlotSpec("loss_curves", plots.plot_loss_curves,
             "Training losses (window means) and learning rate per backbone, one line per seed.",
             "a backbone's loss.csv"),
)


def build_tables(run: Run) -> dict[str, Table]:
    """Every table the run's files allow, by name (the file stem under tables/)."""
    return {table.name: table for make in TABLES if (table := make(run)) is not None}


def build_plots(run: Run) -> dict[str, Figure]:
    """Every plot by name, its PNG None where its input is missing."""
    figures = {}
    for spec in PLOTS:
        drawn = spec.draw(run)
        figures[spec.name] = Figure(spec.name, spec.caption, spec.needs,
                                    None if drawn is None else plots.figure_png(drawn))
    return figures


def context(run: Run, tables: dict[str, Table], figures: dict[str, Figure]) -> dict[str, Any]:
    """What the templates fill in: the run's sentences, its tables and its figures."""
    return {
        "title": f"detbench report: {' vs '.join(run.backbones)} ({run.config.profile.name} profile)",
        "intro": ("Faster R-CNN + FPN (torchvision) with each backbone under the same data, detector settings, "
                  "schedule, batches and augmentation draws within each seed; rendered from the run folder's files "
                  "by `python -m bench.report`."),
        "run_lines": describe_run(run), "warnings": data_warnings(run), "missing": missing_inputs(run),
        "verdicts": verdicts(run), "like_for_like": like_for_like_sentence(run), "caveat": caveat(run),
        "localisation_reading": mechanism.localisation_reading(run), "ablations": paper_tables.ablation_lines(run),
        "tables": tables, "figures": figures,
    }


def write_report(run_dir: str | Path | Run) -> Path:
    """Render tables/, plots/, report.md and report.html from the run folder's files; return report.md's path.

    A loaded `Run` may be passed instead of its folder, to share its bootstrap with `summary`."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    tables = build_tables(run)
    figures = build_plots(run)
    return write_outputs(run.layout, context(run, tables, figures), tables, figures)


def summary(run_dir: str | Path | Run) -> str:
    """What a finished run prints: the verdict sentences and the accuracy table."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    table = accuracy.accuracy_table(run)
    lines = verdicts(run) or ["no pair of backbones finished: no verdict"]
    return "\n".join(lines) + ("" if table is None else f"\n\n{table.title}\n\n{table.to_markdown()}")


__all__ = ["Run", "Table", "Figure", "TABLES", "PLOTS", "build_tables", "build_plots", "load_run", "load_paper",
           "missing_inputs", "describe_run", "verdicts", "write_report", "summary"]
