"""A run folder's files -> `Run`: everything a report shows, and nothing it would have to recompute.

A run trains every backbone once per seed into `seed<k>/<backbone>/`; folders written before
seeds existed (`<backbone>/` and `seed: N` in config.yaml) are read too. A backbone-seed that
diverged, or never finished, is simply absent from `metrics`, and `missing_inputs` says so.
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

Key = tuple[str, int]  # (backbone, seed)


@dataclass
class Run:
    """Everything a report shows, read from one run folder; absent keys mark what is missing."""

    path: Path
    config: dict[str, Any]
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
    def backbones(self) -> list[str]:
        return list(self.config["backbones"])

    @property
    def seeds(self) -> list[int]:
        return seeds_of(self.config)

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
        return self.config.get("pretrained_dir") is not None


def seeds_of(config: dict[str, Any]) -> list[int]:
    """The run's training seeds; a folder from before seeds existed has one `seed`."""
    return list(config["profile"]["seeds"]) if _has_seeds(config) else [int(config.get("seed", 0))]


def _has_seeds(config: dict[str, Any]) -> bool:
    return "seeds" in config["profile"]


def result_dir(run_dir: Path, config: dict[str, Any], backbone: str, seed: int) -> Path:
    return run_dir / f"seed{seed}" / backbone if _has_seeds(config) else run_dir / backbone


def metrics_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """A backbone-seed's metrics.json as its row of the run's metrics.csv (bench.run and bench.compare write it)."""
    return {
        "seed": metrics["seed"],
        "backbone": metrics["backbone"],
        **metrics["stats"],
        "train_seconds": metrics["train"]["seconds"],
        "train_images_per_s": metrics["train"]["images_per_s"],
        "eval_seconds": metrics["eval_seconds"],
    }


def load_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml is what makes a folder a run folder."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ReportError(f"{run_dir} is not a run folder (no config.yaml)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ReportError(f"{path}: invalid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(config, dict) or not isinstance(config.get("backbones"), list) or "profile" not in config:
        raise ReportError(f"{path} is not a detbench run configuration")
    return config


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
    path = Path(run_dir)
    config = load_config(path)
    keys = [(name, seed) for seed in seeds_of(config) for name in config["backbones"]]
    folders = {key: result_dir(path, config, *key) for key in keys}
    metrics = {key: load_json(folder / "metrics.json") for key, folder in folders.items()}
    losses = {key: load_csv(folder / "loss.csv") for key, folder in folders.items()}
    diverged = {key: load_json(folder / "diverged.json") for key, folder in folders.items()}
    analyses = {key: load_json(folder / "analysis.json") for key, folder in folders.items()}
    evals = {key: load_csv(folder / "eval.csv") for key, folder in folders.items()}
    return Run(
        path=path,
        config=config,
        metrics={key: m for key, m in metrics.items() if m is not None},
        losses={key: frame for key, frame in losses.items() if frame is not None},
        evaluations={key: folder / "evaluation.npz" for key, folder in folders.items()
                     if (folder / "evaluation.npz").is_file() and metrics[key] is not None},
        diverged={key: d["reason"] for key, d in diverged.items() if d is not None},
        analyses={key: a for key, a in analyses.items() if a is not None and key in metrics and metrics[key]},
        evals={key: frame for key, frame in evals.items() if frame is not None and not frame.empty},
        receptive_field=load_csv(path / "receptive_field.csv"),
        measurements=load_csv(path / "measurements.csv"),
        flops=load_csv(path / "flops_by_module.csv"),
        environment=load_json(path / "environment.json"),
        status=load_json(path / "status.json"),
        data_report=load_json(path / "data_report.json"),
        sources=load_json(path / "sources.json") or [],
    )


@functools.cache
def load_paper() -> dict[str, Any]:
    """The DetNet paper's tables (percent, as printed), shipped as package data."""
    return yaml.safe_load((files("bench.report") / "paper.yaml").read_text())


def missing_inputs(run: Run) -> list[str]:
    """What this run folder lacks, each with what the report cannot show because of it."""
    missing = [f"`seed{seed}/{name}`: diverged ({reason}); left out of every table"
               for (name, seed), reason in run.diverged.items()]
    missing += [
        f"`{result_dir(Path(), run.config, name, seed)}/metrics.json`: {name} (seed {seed}) did not finish "
        "training and evaluation; it is left out of every table"
        for seed in run.seeds for name in run.backbones
        if (name, seed) not in run.metrics and (name, seed) not in run.diverged
    ]
    missing += [f"`{result_dir(Path(), run.config, *key)}/loss.csv`: no loss curve for {key[0]} (seed {key[1]})"
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
