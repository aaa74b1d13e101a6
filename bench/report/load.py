"""A run folder's files -> `Run`: everything a report shows, and nothing it would have to recompute.

The settings come back typed through `bench.settings.load_run_config`, whatever version of
config.yaml the run wrote, and the files are found where that version put them (`bench.layout`).
A backbone-seed that diverged, or never finished, is simply absent from `metrics`, and
`missing_inputs` says so.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import ReportError
from ..layout import RunLayout
from ..settings import RunConfig, SavedRun, load_run_config

Key = tuple[str, int]  # (backbone, seed)


@dataclass
class Run:
    """Everything a report shows, read from one run folder; absent keys mark what is missing."""

    saved: SavedRun  # config.yaml's settings, the folder's layout, the version they were written in
    metrics: dict[Key, dict[str, Any]]  # finished backbone-seeds: metrics.json
    losses: dict[Key, pd.DataFrame]  # loss.csv
    evaluations: dict[Key, Path]  # evaluation.npz: per-image matches, for the bootstrap
    diverged: dict[Key, str]  # diverged.json: why
    analyses: dict[Key, dict[str, Any]]  # analysis.json: error breakdown, proposal recall, RoI levels
    evals: dict[Key, pd.DataFrame]  # eval.csv: validation AP during training (train.eval_every)
    measurements: pd.DataFrame | None
    flops: pd.DataFrame | None
    environment: dict[str, Any] | None
    receptive_field: pd.DataFrame | None = None  # receptive_field.csv
    status: dict[str, Any] | None = None
    data_report: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)  # the folders bench.compare merged
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # what tables and plots share (intervals)

    @property
    def path(self) -> Path:
        return self.saved.layout.root

    @property
    def config(self) -> RunConfig:
        return self.saved.config

    @property
    def layout(self) -> RunLayout:
        return self.saved.layout

    @property
    def backbones(self) -> list[str]:
        return list(self.config.backbones)

    @property
    def seeds(self) -> list[int]:
        return list(self.config.profile.seeds)

    @property
    def finished(self) -> list[str]:
        """Backbones with at least one finished seed, in the configured order."""
        done = {name for name, _ in self.metrics}
        return [name for name in self.backbones if name in done]

    def finished_seeds(self, *backbones: str) -> list[int]:
        """The seeds every one of `backbones` finished: what a paired comparison can use."""
        return [s for s in self.seeds if all((name, s) in self.metrics for name in backbones)]

    @property
    def pretrained(self) -> bool:
        return self.config.pretrained


def metrics_row(metrics: dict[str, Any], seed: int) -> dict[str, Any]:
    """A backbone-seed's metrics.json as its row of the run's metrics.csv (bench.run and bench.compare write it);
    the seed is its folder's, as a version 1 metrics.json has none."""
    return {
        "seed": seed,
        "backbone": metrics["backbone"],
        **metrics["stats"],
        "train_seconds": metrics["train"]["seconds"],
        "train_images_per_s": metrics["train"]["images_per_s"],
        "eval_seconds": metrics["eval_seconds"],
    }


def load_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: invalid JSON ({err})") from None


def load_csv(path: Path) -> pd.DataFrame | None:
    """The table, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ReportError(f"{path}: unreadable CSV ({err})") from None


def load_run(run_dir: str | Path) -> Run:
    """Read every input of a report; raise ReportError if `run_dir` is not a run folder."""
    saved = load_run_config(Path(run_dir))
    layout, config = saved.layout, saved.config
    keys = [(name, seed) for seed in config.profile.seeds for name in config.backbones]
    folders = {key: layout.result(*key) for key in keys}
    metrics = {key: load_json(files.metrics) for key, files in folders.items()}
    losses = {key: load_csv(files.loss) for key, files in folders.items()}
    diverged = {key: load_json(files.diverged) for key, files in folders.items()}
    analyses = {key: load_json(files.analysis) for key, files in folders.items()}
    evals = {key: load_csv(files.eval) for key, files in folders.items()}
    return Run(
        saved=saved,
        metrics={key: m for key, m in metrics.items() if m is not None},
        losses={key: frame for key, frame in losses.items() if frame is not None},
        evaluations={key: files.evaluation for key, files in folders.items()
                     if files.evaluation.is_file() and metrics[key] is not None},
        diverged={key: d["reason"] for key, d in diverged.items() if d is not None},
        analyses={key: a for key, a in analyses.items() if a is not None and key in metrics and metrics[key]},
        evals={key: frame for key, frame in evals.items() if frame is not None and not frame.empty},
        receptive_field=load_csv(layout.receptive_field),
        measurements=load_csv(layout.measurements),
        flops=load_csv(layout.flops_by_module),
        environment=load_json(layout.environment),
        status=load_json(layout.status),
        data_report=load_json(layout.data_report),
        sources=load_json(layout.sources) or [],
    )


@functools.cache
def load_paper() -> dict[str, Any]:
    """The DetNet paper's tables (percent, as printed), shipped as package data."""
    return yaml.safe_load((files("bench.report") / "paper.yaml").read_text())


def missing_inputs(run: Run) -> list[str]:
    """What this run folder lacks, each with what the report cannot show because of it."""
    named = run.layout.relative()
    missing = [f"`{named.result(name, seed).folder}`: diverged ({reason}); left out of every table"
               for (name, seed), reason in run.diverged.items()]
    missing += [
        f"`{named.result(name, seed).metrics}`: {name} (seed {seed}) did not finish "
        "training and evaluation; it is left out of every table"
        for seed in run.seeds for name in run.backbones
        if (name, seed) not in run.metrics and (name, seed) not in run.diverged
    ]
    missing += [f"`{named.result(*key).loss}`: no loss curve for {key[0]} (seed {key[1]})"
                for key in run.metrics if key not in run.losses]
    if run.measurements is None:
        missing.append(
            "`measurements.csv`: measurement is missing (the run stopped before it): "
            "no parameter counts, compute, latency or memory"
        )
    if run.flops is None:
        missing.append("`flops_by_module.csv`: no compute by module")
    if run.environment is None:
        missing.append("`environment.json`: software versions and hardware are not recorded")
    without = sorted({name for name, seed in run.metrics if (name, seed) not in run.evaluations})
    if without:
        missing.append(
            f"`evaluation.npz` (per-image matches) for {', '.join(without)}: written by detbench since seeds "
            "existed; without it there are no confidence intervals for those backbones"
        )
    return missing


def percent(value: float | None) -> float:
    """COCO fraction -> percent; COCOeval's -1 (no ground truth in that range) -> NaN."""
    return np.nan if value is None or value < 0 else 100 * value
