"""A run folder -> tables (CSV + Markdown), plots (PNG), `report.md` and a self-contained `report.html`.

Everything is re-rendered from the files in the run folder alone, so a report can be rebuilt
or restyled long after the run, and rendering one folder twice gives byte-identical files:
nothing reads the clock or the folder's absolute path, and PNGs carry no version metadata.
Inputs that an interrupted run lacks (measurements, compute by module, environment, noise
splits, a backbone that never finished) are named in the report and their tables and plots
skipped. The paper's figures come from the package data file `paper.yaml`.

    python -m bench.report RUN_DIR
"""
from __future__ import annotations

import argparse
import base64
import functools
import html
import io
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

ACCURACY_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LOCALISATION_COLUMNS = (
    "AP50 all", "AP85 all", "AP50 small", "AP85 small", "AP50 large", "AP85 large",
    "AR50 small", "AR85 small", "AR50 large", "AR85 large", "mean AR",
)
SIZES = ("small", "medium", "large")
IOUS = tuple(f"{50 + 5 * i}" for i in range(10))  # "50".."95", as in "AP85 large"
# The cost table's latency and the trade-off plots use this one setting; tables/latency.csv has all.
HEADLINE = {"batch_size": 1, "dtype": "float32", "channels_last": False}
MISSING = "–"
_NUMBER = re.compile(r"^[+-]?\d[\d.]*( ± [\d.]+)?$")
_STYLE = {
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8,
}
_DPI = 110


class ReportError(ValueError):
    """The folder is not a run folder, or one of its files cannot be read."""


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    """Everything a report shows, read from one run folder; None or absent keys mark what is missing."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, dict[str, Any]]  # backbone -> metrics.json, finished backbones only
    losses: dict[str, pd.DataFrame]  # backbone -> loss.csv
    measurements: pd.DataFrame | None
    flops: pd.DataFrame | None
    environment: dict[str, Any] | None

    @property
    def backbones(self) -> list[str]:
        return list(self.config["backbones"])

    @property
    def finished(self) -> list[str]:
        return [name for name in self.backbones if name in self.metrics]

    @property
    def pretrained(self) -> bool:
        return self.config.get("pretrained_dir") is not None


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
    metrics = {name: load_json(path / name / "metrics.json") for name in config["backbones"]}
    losses = {name: load_csv(path / name / "loss.csv") for name in config["backbones"]}
    return Run(
        path=path,
        config=config,
        metrics={name: m for name, m in metrics.items() if m is not None},
        losses={name: frame for name, frame in losses.items() if frame is not None},
        measurements=load_csv(path / "measurements.csv"),
        flops=load_csv(path / "flops_by_module.csv"),
        environment=load_json(path / "environment.json"),
    )


@functools.cache
def load_paper() -> dict[str, Any]:
    """The DetNet paper's tables (percent, as printed), shipped as package data."""
    return yaml.safe_load((files("bench") / "paper.yaml").read_text())


def missing_inputs(run: Run) -> list[str]:
    """What this run folder lacks, each with what the report cannot show because of it."""
    missing = [
        f"`{name}/metrics.json`: {name} did not finish training and evaluation; it is left out of every table"
        for name in run.backbones if name not in run.metrics
    ]
    missing += [f"`{name}/loss.csv`: no loss curve for {name}" for name in run.finished if name not in run.losses]
    if run.measurements is None:
        missing.append(
            "`measurements.csv`: measurement is missing (the run stopped before it): "
            "no parameter counts, compute, latency or memory"
        )
    if run.flops is None:
        missing.append("`flops_by_module.csv`: no compute by module")
    if run.environment is None:
        missing.append("`environment.json`: software versions and hardware are not recorded")
    missing += [
        f"`{name}/metrics.json` has no `ap_halves` (AP per half-split): "
        f"no noise estimate for AP differences involving {name}"
        for name in run.finished if not ap_halves(run.metrics[name])
    ]
    return missing


# --------------------------------------------------------------------------- values


def _percent(value: float | None) -> float:
    """COCO fraction -> percent; COCOeval's -1 (no ground truth in that range) -> NaN."""
    return np.nan if value is None or value < 0 else 100 * value


def _metric_values(metrics: dict[str, Any]) -> dict[str, float]:
    """One backbone's metrics.json -> {"AP": .., "AP85 large": .., "AR50 small": .., "mean AR": ..} in percent."""
    stats = metrics["stats"]
    values = {name: _percent(stats[name]) for name in ACCURACY_COLUMNS}
    for kind, by_iou in (("AP", metrics["ap_by_iou"]), ("AR", metrics["ar_by_iou"])):
        for area, curve in by_iou.items():
            values.update({f"{kind}{iou[2:]} {area}": _percent(v) for iou, v in curve.items()})
    values["mean AR"] = _percent(stats["AR100"])  # the paper's "mean AR": AR@100 over IoU .50:.95
    return values


def run_values(run: Run) -> pd.DataFrame:
    """Every accuracy number of the run in percent: one row per finished backbone."""
    return pd.DataFrame({name: _metric_values(run.metrics[name]) for name in run.finished}).T


def paper_values(table: str) -> pd.DataFrame:
    """One of the paper's tables as a frame: one row per backbone, columns as in this report."""
    return pd.DataFrame(load_paper()[table]["rows"]).T


def like_for_like(run: Run) -> str:
    """The paper table trained like this run: ImageNet weights (Table 1) or from scratch (Table 2)."""
    return "table1" if run.pretrained else "table2"


def _paper_subset(table: str, backbones: Iterable[str], columns: Iterable[str]) -> pd.DataFrame:
    """The paper's values for those of `backbones` it reports, in their order."""
    frame = paper_values(table).reindex(columns=list(columns))
    return frame.loc[[name for name in backbones if name in frame.index]]


def _paper_rows(table: str, backbones: Iterable[str], columns: Iterable[str], label: str | None = None) -> pd.DataFrame:
    """The paper's rows for the run's backbones, labelled "<backbone> (paper, <label>)"."""
    label = label or load_paper()[table]["label"]
    return _paper_subset(table, backbones, columns).rename(index=lambda name: f"{name} (paper, {label})")


def _measured(frame: pd.DataFrame, column: str, **where: Any) -> float:
    """The first non-NaN `column` of the measurement rows matching `where`, else NaN."""
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    values = rows[column].dropna() if column in rows else ()
    return float(values.iloc[0]) if len(values) else np.nan


def headline_latency(run: Run, backbone: str, target: str) -> tuple[float, float]:
    """(median, IQR) in ms at batch 1, float32, contiguous; NaNs when not measured."""
    where = {"backbone": backbone, "target": target, "metric": "latency", "device": headline_device(run), **HEADLINE}
    m = run.measurements
    return _measured(m, "latency_ms_median", **where), _measured(m, "latency_ms_iqr", **where)


def _peak_memory(run: Run, backbone: str, target: str) -> float:
    """CUDA allocator peak where measured, else the process's resident-set increase (CPU)."""
    where = {"backbone": backbone, "target": target}
    peak = _measured(run.measurements, "peak_mem_mb", **where)
    return peak if not np.isnan(peak) else _measured(run.measurements, "rss_peak_mb", **where)


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A report table: numbers in `frame` (first column = row labels), printed with `formats`."""

    name: str  # file stem under tables/
    title: str
    frame: pd.DataFrame
    note: str = ""
    formats: dict[str, str] = field(default_factory=dict)  # column -> format spec; floats default to ".1f"

    def _spec(self, column: str) -> str:
        return self.formats.get(column, ".1f")

    def formatted(self) -> pd.DataFrame:
        """Every cell as printed: floats with the column's format, "–" where no value exists."""
        return pd.DataFrame(
            {column: [self._cell(v, self._spec(column)) for v in self.frame[column]] for column in self.frame}
        )

    @staticmethod
    def _cell(value: Any, spec: str) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return MISSING
        if isinstance(value, (float, np.floating)):
            return format(value, spec)
        return str(value)

    def rounded(self) -> pd.DataFrame:
        """The frame rounded as printed, for CSV: numbers stay numbers."""
        decimals = {c: int(m.group(1)) for c in self.frame if (m := re.search(r"\.(\d+)f$", self._spec(c)))}
        return self.frame.infer_objects().round(decimals)

    def _numeric(self) -> list[bool]:
        """Columns printed as numbers (including "median ± IQR"), to be right-aligned."""
        shown = self.formatted()
        return [all(_NUMBER.match(cell) or cell == MISSING for cell in shown[column]) for column in shown]

    def to_markdown(self) -> str:
        """Pipes escaped, numbers right-aligned, text left-aligned."""
        shown = self.formatted().map(lambda cell: cell.replace("|", "\\|"))
        align = ["right" if is_number else "left" for is_number in self._numeric()]
        return shown.to_markdown(index=False, disable_numparse=True, colalign=align)

    def to_html(self) -> str:
        """A plain <table>; numeric columns carry class "num" so CSS can right-align them."""
        shown = self.formatted()
        classes = [' class="num"' if is_number else "" for is_number in self._numeric()]
        head = "".join(f"<th{c}>{html.escape(str(name))}</th>" for c, name in zip(classes, shown.columns))
        rows = "\n".join(
            "<tr>" + "".join(f"<td{c}>{html.escape(cell)}</td>" for c, cell in zip(classes, row)) + "</tr>"
            for row in shown.itertuples(index=False)
        )
        return f'<table class="data">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>'


def accuracy_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    main = like_for_like(run)
    others = [t for t in ("table1", "table2", "test_dev") if t != main]
    frame = pd.concat([
        run_values(run)[list(ACCURACY_COLUMNS)],
        *(_paper_rows(t, run.finished, ACCURACY_COLUMNS) for t in (main, *others)),
    ])
    paper = load_paper()
    return Table(
        "accuracy",
        "Accuracy: COCO box AP (%)",
        frame.rename_axis("backbone").reset_index(),
        note=(
            f"AP in percent (COCOeval × 100), averaged over IoU .50:.95; APs/APm/APl by object area. "
            f"Rows marked paper: the DetNet paper (arXiv:1804.06215) on COCO. Like-for-like for this run: "
            f"{paper[main]['label']}; the other paper rows are for reference."
        ),
    )


def localisation_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    paper = pd.concat([_paper_rows("table3", run.finished, LOCALISATION_COLUMNS, "Tables 3 and 4"),
                       _paper_rows("table4", run.finished, LOCALISATION_COLUMNS, "Tables 3 and 4")])
    paper = paper.groupby(level=0, sort=False).first()  # one row per backbone with Table 3's and 4's columns
    frame = pd.concat([run_values(run).reindex(columns=list(LOCALISATION_COLUMNS)), paper])
    return Table(
        "localisation",
        "Localisation and recall: AP and AR at IoU 0.50 and 0.85 (%)",
        frame.rename_axis("backbone").reset_index(),
        note=(
            "Percent. AP50/AP85: AP at a single IoU threshold (maxDets 100); AR50/AR85: recall at that IoU; "
            "mean AR: AR@100 averaged over IoU .50:.95. Sizes by COCO area: small < 32², large > 96² pixels. "
            "Paper rows: DetNet paper, arXiv:1804.06215, Tables 3 and 4 (which report only some of these columns)."
        ),
    )


def _measured_backbones(run: Run) -> list[str]:
    return [name for name in run.backbones if name in set(run.measurements["backbone"])]


def cost_table(run: Run) -> Table | None:
    """Size and compute per backbone, with the paper's FLOPs as ratios to ResNet-50 (comparable across counts)."""
    if run.measurements is None:
        return None
    m, sizes = run.measurements, run.config["profile"]["measure"]
    gmacs_cls = f"GMACs (multiply-adds) classifier @{sizes['classification_size']}"
    gmacs_det = f"GMACs (multiply-adds) detector @{sizes['detection_size']}"
    ratio = "classifier compute relative to resnet50 (×)"
    params = {target: f"params {target} (M)" for target in ("classifier", "backbone", "detector")}
    frame = pd.DataFrame({
        name: {
            **{column: _measured(m, "params", backbone=name, target=target) / 1e6 for target, column in params.items()},
            gmacs_cls: _measured(m, "gmacs", backbone=name, target="classifier"),
            gmacs_det: _measured(m, "gmacs", backbone=name, target="detector"),
        }
        for name in _measured_backbones(run)
    }).T
    frame[ratio] = frame[gmacs_cls] / frame[gmacs_cls].get("resnet50", np.nan)
    paper_flops = "FLOPs (paper's count, G)"
    paper = _paper_rows("table1", run.backbones, [paper_flops], "Table 1")
    paper[ratio] = paper[paper_flops] / paper_values("table1").at["resnet50", paper_flops]
    return Table(
        "cost",
        "Cost: parameters and compute",
        pd.concat([frame, paper]).rename_axis("backbone").reset_index(),
        note=(
            f"Params in millions. GMACs = 10⁹ multiply-adds per image, one multiply-add counted once (as "
            f"torchvision's 'GFLOPS' and timm count): the classifier with its ImageNet head at "
            f"{sizes['classification_size']} px, the detector at {sizes['detection_size']} px with "
            f"{sizes['num_proposals']} proposals per image{_uncounted_note(m)}. Paper rows: the "
            f"paper's FLOPs (Table 1) are an older count (ResNet-50 = 3.8G, against 4.09 GMACs counted as here), "
            f"so compare the ratio to resnet50, not the value."
        ),
        formats=dict.fromkeys([*params.values(), gmacs_cls, gmacs_det, ratio], ".2f"),
    )


def _uncounted_note(measurements: pd.DataFrame) -> str:
    """Ops the FLOP counter has no formula for, whose arithmetic the GMACs leave out."""
    cells = measurements["uncounted_ops"].dropna() if "uncounted_ops" in measurements else []
    ops = sorted({op for cell in cells for op in str(cell).split(";") if op})
    return f" (not counted: {', '.join(ops)})" if ops else ""


def speed_table(run: Run) -> Table | None:
    """Latency at the headline setting, peak memory and training throughput per backbone."""
    if run.measurements is None:
        return None
    m = run.measurements
    latency = {target: f"{target} latency (ms, median ± IQR)" for target in ("backbone", "detector")}
    memory = {"detector": "peak memory, detector inference (MiB)", "train_step": "peak memory, training step (MiB)"}
    step, loop = "training step images/s (measured)", "training images/s (training loop)"
    frame = pd.DataFrame({
        name: {
            **{column: _plus_minus(*headline_latency(run, name, target)) for target, column in latency.items()},
            **{column: _peak_memory(run, name, target) for target, column in memory.items()},
            step: _measured(m, "images_per_s", backbone=name, target="train_step", metric="throughput"),
            loop: run.metrics[name]["train"]["images_per_s"] if name in run.metrics else np.nan,
        }
        for name in _measured_backbones(run)
    }).T
    return Table(
        "speed",
        "Cost: latency, memory and training speed",
        frame.rename_axis("backbone").reset_index(),
        note=(
            f"Latency on {measured_device(run)}, batch 1, float32, contiguous memory, in milliseconds: median ± "
            f"interquartile range over timed blocks (every setting: `tables/latency.csv`). {_memory_note(m)} "
            f"Training images/s at batch {run.config['profile']['train']['batch_size']}: a measured step on random "
            f"images, and this run's training loop (data loading included)."
        ),
        formats=dict.fromkeys(memory.values(), ".0f") | {step: ".2f", loop: ".2f"},
    )


def _memory_note(measurements: pd.DataFrame) -> str:
    if "peak_mem_mb" in measurements and measurements["peak_mem_mb"].notna().any():
        return ("Peak memory: torch.cuda.max_memory_allocated during one call, in MiB (weights, inputs and, for a "
                "training step, optimizer state included).")
    return ("Peak memory: the largest increase of the process's resident set during one call, in MiB: a lower "
            "bound of the call's working memory, not comparable with GPU figures.")


def _plus_minus(median: float, iqr: float) -> str | float:
    return np.nan if np.isnan(median) else f"{median:.1f} ± {iqr:.1f}"


def headline_device(run: Run) -> str:
    """The run's own device type: latency is measured on the CPU always, on the GPU too when the run used one."""
    return str(run.config["device"]).split(":")[0]


def measured_device(run: Run) -> str:
    """The name of the headline device as measurements.csv records it, else the configured device."""
    m = run.measurements
    rows = m[m["device"] == headline_device(run)] if m is not None and "device" in m else None
    names = rows["device_name"].dropna() if rows is not None and "device_name" in rows else ()
    return str(names.iloc[0]) if len(names) else str(run.config["device"])


_LATENCY_COLUMNS = {
    "backbone": "backbone", "target": "target", "metric": "metric", "device_name": "device", "dtype": "dtype",
    "channels_last": "channels_last", "batch_size": "batch", "input_size": "input (px)", "threads": "threads",
    "latency_ms_median": "latency median (ms)", "latency_ms_iqr": "latency IQR (ms)", "images_per_s": "images/s",
}


def latency_table(run: Run) -> Table | None:
    m = run.measurements
    rows = None if m is None else m[m["metric"].isin(["latency", "throughput"])]
    if rows is None or rows.empty:
        return None
    return Table(
        "latency",
        "Latency and throughput, every measured setting",
        rows.reindex(columns=list(_LATENCY_COLUMNS)).rename(columns=_LATENCY_COLUMNS),
        note="Latency: median and interquartile range over timed blocks, in milliseconds per batch. "
        "Throughput (training step): images per second.",
        formats={"batch": ".0f", "input (px)": ".0f", "threads": ".0f", "latency median (ms)": ".2f",
                 "latency IQR (ms)": ".2f", "images/s": ".2f"},
    )


def compute_by_module_table(run: Run) -> Table | None:
    if run.flops is None or run.flops.empty:
        return None
    frame = run.flops.pivot_table(index=["target", "module"], columns="backbone", values="gmacs")  # sorted: a tree
    frame = frame.reindex(columns=[b for b in run.backbones if b in frame.columns])
    return Table(
        "compute_by_module",
        "Compute by module (GMACs, multiply-adds)",
        frame.reset_index().rename_axis(columns=None),
        note="10⁹ multiply-adds per image, one multiply-add counted once, at the sizes of the cost table.",
        formats=dict.fromkeys(frame.columns, ".2f"),
    )


def per_category_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    frame = pd.DataFrame(
        {name: {cat: _percent(ap) for cat, ap in run.metrics[name]["per_category"].items()} for name in run.finished}
    )
    return Table(
        "per_category",
        "Per-category AP (%)",
        frame.rename_axis("category").reset_index(),
        note="AP@[.50:.95] per category over all object sizes, in percent; – where the category has no ground truth.",
    )


def _training_row(metrics: dict[str, Any]) -> dict[str, Any]:
    train = metrics["train"]
    return {
        "iterations": train["iterations"],
        "training time (s)": train["seconds"],
        "training images/s": train["images_per_s"],
        "final loss": train["final_loss"],
        "evaluation time (s)": metrics["eval_seconds"],
        "val images": metrics["num_images"],
        "detections": metrics["num_detections"],
    }


def training_table(run: Run) -> Table | None:
    if not run.finished:
        return None
    frame = pd.DataFrame({name: _training_row(run.metrics[name]) for name in run.finished}).T
    return Table(
        "training",
        "Training and evaluation",
        frame.rename_axis("backbone").reset_index(),
        note="Wall-clock seconds on the run's device; final loss: the total training loss at the last iteration.",
        formats={"iterations": ".0f", "training images/s": ".2f", "final loss": ".3f",
                 "val images": ".0f", "detections": ".0f"},
    )


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def environment_table(run: Run) -> Table | None:
    if run.environment is None:
        return None
    items = _flatten(run.environment)
    return Table(
        "environment",
        "Environment (recorded by the run)",
        pd.DataFrame({"item": list(items), "value": [None if v is None else str(v) for v in items.values()]}),
        note="From `environment.json`, as written when the run was measured.",
    )


def _pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def ap_halves(metrics: dict[str, Any]) -> list[float]:
    """AP on each random half-split of the validation images (the same splits for every backbone); [] if absent."""
    return list(metrics.get("ap_halves") or [])


def _paired_se(a: list[float], b: list[float]) -> float:
    """Standard error of an AP difference, in points, from the same half-splits; NaN without them.

    AP on a random half of the images, drawn without replacement, varies about as much as AP
    on the full set would over resampled image sets, so the spread of the paired per-split
    differences estimates the standard error of the full-set difference. A split where either
    AP is -1 (no ground truth) is left out.
    """
    if len(a) != len(b):
        return np.nan
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    valid = (a_ >= 0) & (b_ >= 0)
    return float(np.std(100 * (a_ - b_)[valid], ddof=1)) if valid.sum() >= 2 else np.nan


def _noise_verdict(diff: float, se: float) -> str:
    if np.isnan(se):
        return "no noise estimate: a single run cannot tell"
    return "within evaluation noise (< 2 SE)" if abs(diff) < 2 * se else "larger than evaluation noise (≥ 2 SE)"


def ap_differences_table(run: Run) -> Table | None:
    pairs = _pairs(run.finished)
    if not pairs:
        return None
    rows = []
    for a, b in pairs:
        ma, mb = run.metrics[a], run.metrics[b]
        diff = 100 * (ma["stats"]["AP"] - mb["stats"]["AP"])
        se = _paired_se(ap_halves(ma), ap_halves(mb))
        rows.append({"pair": f"{a} − {b}", "AP difference (points)": diff, "noise SE (points)": se,
                     "verdict": _noise_verdict(diff, se)})
    splits = max(len(ap_halves(run.metrics[name])) for name in run.finished)
    how = (
        f"SE: standard deviation (ddof=1) of the paired AP differences over {splits} random half-splits of "
        f"the validation images, the same splits for every backbone; AP on a half-split drawn without "
        f"replacement varies about as much as full-set AP does, so this is the standard error of the "
        f"full-set difference."
        if splits else "No `ap_halves` in metrics.json, so no noise estimate."
    )
    return Table(
        "ap_differences",
        "AP differences between backbones (AP points)",
        pd.DataFrame(rows),
        note=(
            f"Difference in AP@[.50:.95], percentage points. {how} Within noise: |difference| < 2 SE. "
            "This is the noise of evaluating on a finite set of images only: how much training itself "
            "varies with the seed is not in it, so repeat the run with other --seed values before "
            "trusting a difference a few SE wide."
        ),
        formats={"AP difference (points)": "+.1f", "noise SE (points)": ".2f"},
    )


def latency_differences_table(run: Run) -> Table | None:
    if run.measurements is None:
        return None
    rows = []
    for target in ("backbone", "detector"):
        for a, b in _pairs(run.backbones):
            (med_a, iqr_a), (med_b, iqr_b) = headline_latency(run, a, target), headline_latency(run, b, target)
            if np.isnan(med_a) or np.isnan(med_b):
                continue
            overlap = abs(med_a - med_b) <= (iqr_a + iqr_b) / 2
            verdict = "within noise (IQR ranges overlap)" if overlap else "larger than noise (IQR ranges apart)"
            rows.append({"pair": f"{a} − {b}", "target": target, "latency difference (ms)": med_a - med_b,
                         "verdict": verdict})
    if not rows:
        return None
    return Table(
        "latency_differences",
        "Latency differences between backbones (ms)",
        pd.DataFrame(rows),
        note=f"Median latency at batch 1, float32 on {measured_device(run)}, in milliseconds. Within noise when "
        "the interquartile ranges (taken as median ± IQR/2) overlap.",
        formats={"latency difference (ms)": "+.1f"},
    )


def _same_direction(ours: float, theirs: float) -> str:
    if np.isnan(ours):
        return MISSING
    if round(ours, 1) == 0:  # as printed: no difference to have a direction
        return "no difference"
    return "yes" if np.sign(ours) == np.sign(theirs) else "no"


def paper_pattern_table(run: Run) -> Table | None:
    """Differences between backbones in this run next to the paper's: the comparable part of the paper."""
    values = run_values(run)
    sources = {t: load_paper()[t]["label"] for t in (like_for_like(run), "table3", "table4")}
    rows = []
    for a, b in _pairs(run.finished):
        for table, label in sources.items():
            paper = paper_values(table)
            if a not in paper.index or b not in paper.index:
                continue
            for metric in [c for c in paper.columns if c in ACCURACY_COLUMNS + LOCALISATION_COLUMNS]:
                ours, theirs = values.at[a, metric] - values.at[b, metric], paper.at[a, metric] - paper.at[b, metric]
                same = _same_direction(ours, theirs)
                rows.append({"pair": f"{a} − {b}", "metric": metric, "paper source": label,
                             "paper (points)": theirs, "this run (points)": ours, "same direction": same})
    if not rows:
        return None
    return Table(
        "paper_pattern",
        "Pattern check: differences between backbones, paper vs this run (points)",
        pd.DataFrame(rows),
        note="Differences in percentage points (AP or AR). Paper rows: DetNet paper, arXiv:1804.06215. "
        "'same direction': whether this run's difference has the paper's sign; see the AP noise estimate below "
        "before reading much into a small one.",
        formats={"paper (points)": "+.1f", "this run (points)": "+.1f"},
    )


TABLES: tuple[Callable[[Run], Table | None], ...] = (
    training_table, environment_table, accuracy_table, localisation_table, paper_pattern_table,
    ap_differences_table, latency_differences_table, cost_table, speed_table, latency_table, compute_by_module_table,
    per_category_table,
)


def build_tables(run: Run) -> dict[str, Table]:
    """Every table the run's files allow, by name (the file stem under tables/)."""
    return {table.name: table for make in TABLES if (table := make(run)) is not None}


# --------------------------------------------------------------------------- plots


def _figure(
    nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0), **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure: no global state, no GUI backend, nothing to close."""
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()


def _colour(run: Run, name: str) -> str:
    return f"C{run.backbones.index(name) % 10}"


def _percent_axis(axis: Any) -> None:
    axis.set_major_formatter(PercentFormatter(100, decimals=None))


_SIZE_LABELS = {"AP": "AP (all)", "APs": "APs (small)", "APm": "APm (medium)", "APl": "APl (large)"}


def _grouped_bars(ax: Any, run: Run, frame: pd.DataFrame, paper: bool) -> None:
    """One group per column, one bar per row (backbone); paper bars hatched and outlined."""
    width = 0.8 / len(frame)
    x = np.arange(len(frame.columns))
    for i, (name, row) in enumerate(frame.iterrows()):
        colour = _colour(run, name)
        style = {"facecolor": "none", "edgecolor": colour, "hatch": "///"} if paper else {"color": colour}
        bars = ax.bar(x + (i - (len(frame) - 1) / 2) * width, row.fillna(0).to_numpy(), width,
                      label=f"{name} (paper)" if paper else name, **style)
        ax.bar_label(bars, labels=[MISSING if np.isnan(v) else f"{v:.1f}" for v in row], fontsize=7, padding=1)
    ax.set_xticks(x, [_SIZE_LABELS[column] for column in frame.columns])
    ax.set_ylabel("AP (%)")
    _percent_axis(ax.yaxis)
    ax.margins(y=0.15)
    ax.legend(loc="upper left")


def plot_ap_by_size(run: Run) -> Figure | None:
    if not run.finished:
        return None
    groups = ["AP", "APs", "APm", "APl"]
    table = like_for_like(run)
    paper = _paper_subset(table, run.finished, groups)
    panels = [(f"This run: {describe_data(run.config)}", run_values(run)[groups], False)]
    if not paper.empty:
        panels.append((f"Paper, {load_paper()[table]['label']} (COCO)", paper, True))
    fig, axes = _figure(1, len(panels), size=(5.5 * len(panels), 4.0))
    for ax, (title, frame, is_paper) in zip(axes, panels):
        _grouped_bars(ax, run, frame, is_paper)
        ax.set_title(title, wrap=True)
    fig.suptitle("AP by object size (COCO AP, %)")
    return fig


def plot_ap_vs_iou(run: Run) -> Figure | None:
    if not run.finished:
        return None
    values = run_values(run)
    thresholds = [int(iou) / 100 for iou in IOUS]
    fig, axes = _figure(1, len(SIZES), size=(11.0, 3.8), sharey=True)
    for ax, size in zip(axes, SIZES):
        curves = values.reindex(columns=[f"AP{iou} {size}" for iou in IOUS])
        for name, curve in curves.iterrows():
            ax.plot(thresholds, curve.to_numpy(), marker="o", markersize=3, color=_colour(run, name), label=name)
        if curves.isna().all(axis=None):
            ax.text(0.5, 0.5, "no ground truth of this size", transform=ax.transAxes, ha="center", color="grey")
        for iou in (0.5, 0.85):  # the paper's Table 3 columns
            ax.axvline(iou, linestyle=":", color="grey", linewidth=1)
        ax.set_title(f"{size} objects")
        ax.set_xlabel("IoU threshold")
        ax.set_xticks(thresholds[::2] + [0.85])
    axes[0].set_ylabel("AP (%)")
    _percent_axis(axes[0].yaxis)
    axes[0].legend()
    fig.suptitle("AP vs IoU threshold by object size (dotted: IoU 0.50 and 0.85, the paper's Table 3)")
    return fig


def _tradeoff(run: Run, x: dict[str, tuple[float, float]], xlabel: str, title: str) -> Figure | None:
    """AP against a cost, one labelled point per backbone; x maps backbone -> (value, error bar half-width)."""
    if not run.finished:
        return None
    ap = run_values(run)["AP"]
    points = {name: xy for name, xy in x.items() if name in ap.index and not np.isnan(xy[0])}
    if not points:
        return None
    fig, (ax,) = _figure(size=(6.0, 4.2))
    for name, (value, err) in points.items():
        ax.errorbar(value, ap[name], xerr=err, fmt="o", color=_colour(run, name), capsize=3, clip_on=False, zorder=3)
        ax.annotate(name, (value, ap[name]), xytext=(6, 6), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AP (%)")
    _percent_axis(ax.yaxis)
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
    size = run.config["profile"]["measure"]["detection_size"]
    gmacs = {
        name: (_measured(run.measurements, "gmacs", backbone=name, target="detector"), 0.0) for name in run.backbones
    }
    return _tradeoff(run, gmacs, f"detector compute at {size} px (GMACs, multiply-adds)", "AP vs detector compute")


def plot_loss_curves(run: Run) -> Figure | None:
    if not run.losses:
        return None
    first = next(iter(run.losses.values()))
    columns = [c for c in first.columns if c.startswith("loss")] + ["lr"]
    ncols = 3
    fig, axes = _figure(-(-len(columns) // ncols), ncols, size=(11.0, 6.0), sharex=True)
    for ax, column in zip(axes, columns):
        for name, frame in run.losses.items():
            ax.plot(frame["iteration"], frame[column], color=_colour(run, name), label=name)
        ax.set_title({"loss": "total loss", "lr": "learning rate"}.get(column, column))
    axes[columns.index("lr")].set_yscale("log")
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # shared by every panel
    axes[0].set_ylabel("loss (window mean)")
    axes[0].legend()
    fig.supxlabel("iteration")
    fig.suptitle("Training losses and learning rate per backbone")
    return fig


@dataclass(frozen=True)
class PlotSpec:
    name: str  # file stem under plots/
    draw: Callable[[Run], Figure | None]
    caption: str
    needs: str  # what the plot is drawn from, said when it is skipped


PLOTS = (
    PlotSpec("ap_by_size", plot_ap_by_size,
             "AP by object size per backbone; hatched bars: the like-for-like paper table, on COCO.",
             "a finished backbone's metrics.json"),
    PlotSpec("ap_vs_iou", plot_ap_vs_iou,
             "AP at each IoU threshold, per object size. The paper's localisation argument: DetNet-59's gain "
             "over ResNet-50 on large objects grows at high IoU.",
             "a finished backbone's metrics.json"),
    PlotSpec("ap_vs_gmacs", plot_ap_vs_gmacs,
             "Accuracy against detector compute; up and to the left is better.",
             "measurements.csv with detector compute"),
    PlotSpec("ap_vs_latency", plot_ap_vs_latency,
             "Accuracy against detector latency (batch 1, float32) on the run's device; up and to the left is better.",
             "measurements.csv with detector latency"),
    PlotSpec("loss_curves", plot_loss_curves,
             "Training losses (window means) and learning rate per backbone.",
             "a backbone's loss.csv"),
)
PLOT_SPECS = {spec.name: spec for spec in PLOTS}


def figure_png(fig: Figure) -> bytes:
    """PNG bytes without the 'Software' metadata, so the bytes depend on the figure alone."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def build_plots(run: Run) -> dict[str, bytes | None]:
    """Every plot as PNG bytes by name; None where its input is missing."""
    pngs: dict[str, bytes | None] = {}
    with matplotlib.rc_context(_STYLE):
        for spec in PLOTS:
            fig = spec.draw(run)
            pngs[spec.name] = None if fig is None else figure_png(fig)
    return pngs


# --------------------------------------------------------------------------- document


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Plot:
    spec: PlotSpec


Block = Heading | Paragraph | Bullets | Table | Plot


def describe_data(config: dict[str, Any]) -> str:
    data = config["data"]
    if data["train_ann"] is None:
        s = config["profile"]["synthetic"]
        return f"embedded synthetic set ({s['num_train']} train / {s['num_val']} val images, {s['image_size']} px)"
    return f"train {data['train_ann']} ({data['train_images']}), val {data['val_ann']} ({data['val_images']})"


def _describe_device(run: Run) -> str:
    env = run.environment or {}
    device, name = str(run.config["device"]), env.get("device_name") or measured_device(run)
    details = [name] if name != device else []
    details += [f"{env['torch_threads']} torch threads"] if env.get("torch_threads") else []
    return device + (f" ({', '.join(details)})" if details else "")


def _describe_software(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{key} {env[key]}" for key in ("torch", "torchvision", "timm", "python") if env.get(key))
    return f"Software: {versions}; git commit {env.get('git_commit') or 'unknown'}"


def describe_run(run: Run) -> list[str]:
    """What was run, one line per aspect, from config.yaml and environment.json."""
    cfg, profile = run.config, run.config["profile"]
    train, det = profile["train"], profile["detector"]
    weights = (f"ImageNet weights from `{cfg['pretrained_dir']}`" if run.pretrained
               else "trained from scratch (no ImageNet weights)")
    lines = [
        f"Profile: {profile['name']}: {train['iterations']} iterations at batch {train['batch_size']} "
        f"(base lr {train['base_lr']:g} at batch {train['base_batch']}, scaled linearly), "
        f"detector input: short side {det['min_size']} px, long side at most {det['max_size']} px",
        f"Data: {describe_data(cfg)}",
        f"Backbones: {', '.join(run.backbones)}; {weights}",
        f"Seed: {cfg['seed']}; device: {_describe_device(run)}",
    ]
    return lines + ([_describe_software(run.environment)] if run.environment else [])


def _optional(tables: dict[str, Table], name: str, otherwise: str) -> list[Block]:
    """The table, or a sentence saying why it is not there."""
    return [tables[name]] if name in tables else [Paragraph(otherwise)]


def _present(tables: dict[str, Table], *names: str) -> list[Block]:
    return [tables[name] for name in names if name in tables]


def _run_section(run: Run) -> list[Block]:
    blocks: list[Block] = [Heading("The run"), Bullets(tuple(describe_run(run)))]
    missing = missing_inputs(run)
    return blocks + ([Heading("Missing inputs"), Bullets(tuple(missing))] if missing else [])


def _accuracy_section(run: Run, tables: dict[str, Table]) -> list[Block]:
    paper = load_paper()[like_for_like(run)]
    why = "started from ImageNet weights" if run.pretrained else "trained its backbones from scratch"
    return [
        Heading("Accuracy"),
        Paragraph(f"This run {why}, so the like-for-like paper rows are {paper['source']} ({paper['setting']})."),
        *_optional(tables, "accuracy", "No backbone finished, so there is no accuracy to show."),
        Plot(PLOT_SPECS["ap_by_size"]),
    ]


def _localisation_section(tables: dict[str, Table]) -> list[Block]:
    return [
        Heading("Localisation and recall"),
        Paragraph("The paper's reading: DetNet-59's gain on large objects comes from better localisation "
                  "(AP at high IoU, Table 3), and on small objects from better recall (AR, Table 4)."),
        *_optional(tables, "localisation", "No backbone finished, so there is nothing to show."),
        Plot(PLOT_SPECS["ap_vs_iou"]),
    ]


def _caveat(run: Run) -> str:
    train = run.config["profile"]["train"]
    det = run.config["profile"]["detector"]
    return (
        "The paper's numbers come from COCO (80 categories, short side 800 px, 180k iterations at batch 16) "
        "with ImageNet-pretrained backbones (Table 1) or from scratch (Table 2). "
        f"This run: {describe_data(run.config)}, {train['iterations']} iterations at batch {train['batch_size']}, "
        f"{det['min_size']} px input. So only the direction and pattern of the differences can be compared "
        "(for instance, whether DetNet-59 gains most on large objects at high IoU and in small-object recall), "
        "not absolute AP."
    )


def _differences_section(run: Run, tables: dict[str, Table]) -> list[Block]:
    blocks: list[Block] = [Heading("Differences and noise"), Paragraph(_caveat(run))]
    blocks += _present(tables, "paper_pattern", "ap_differences")
    if "ap_differences" in tables and not any(ap_halves(run.metrics[name]) for name in run.finished):
        blocks.append(Paragraph("A single run cannot tell whether these AP differences are real: the metrics "
                                "have no per-half-split AP (`ap_halves`) to estimate the noise from."))
    return blocks + _optional(tables, "latency_differences", "No latency measurements to compare.")


def _cost_section(tables: dict[str, Table]) -> list[Block]:
    return [
        Heading("Cost"),
        *_optional(tables, "cost", "Not measured: `measurements.csv` is missing."),
        *_present(tables, "speed"),
        Plot(PLOT_SPECS["ap_vs_gmacs"]),
        Plot(PLOT_SPECS["ap_vs_latency"]),
        *_present(tables, "latency", "compute_by_module"),
    ]


def _training_section(tables: dict[str, Table]) -> list[Block]:
    return [
        Heading("Training"),
        *_optional(tables, "training", "No backbone finished training."),
        Plot(PLOT_SPECS["loss_curves"]),
        Heading("Per-category AP"),
        *_optional(tables, "per_category", "No backbone finished, so there is nothing to show."),
    ]


def document(run: Run, tables: dict[str, Table]) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and to HTML alike."""
    title = f"detbench report: {' vs '.join(run.backbones)} ({run.config['profile']['name']} profile)"
    intro = ("Faster R-CNN + FPN (torchvision) with each backbone under the same data, detector settings, "
             "schedule and seed; rendered from the run folder's files by `python -m bench.report`.")
    return [
        Heading(title, 1), Paragraph(intro),
        *_run_section(run), *_accuracy_section(run, tables), *_localisation_section(tables),
        *_differences_section(run, tables), *_cost_section(tables), *_training_section(tables),
        Heading("Environment"),
        *_optional(tables, "environment", "No `environment.json`: software versions and hardware are unknown."),
    ]


# --------------------------------------------------------------------------- rendering


def _markdown_block(block: Block, pngs: dict[str, bytes | None]) -> str:
    match block:
        case Heading(text, level):
            return f"{'#' * level} {text}"
        case Paragraph(text):
            return text
        case Bullets(items):
            return "\n".join(f"- {item}" for item in items)
        case Table():
            return f"### {block.title}\n\n{block.to_markdown()}\n\n{block.note} (`tables/{block.name}.csv`)"
        case Plot(spec) if pngs.get(spec.name):
            return f"![{spec.caption}](plots/{spec.name}.png)\n\n*{spec.caption}*"
        case Plot(spec):
            return f"*Plot `{spec.name}` skipped: it needs {spec.needs}.*"
    raise TypeError(f"unknown block {block!r}")


def to_markdown(blocks: list[Block], pngs: dict[str, bytes | None]) -> str:
    return "\n\n".join(_markdown_block(block, pngs) for block in blocks) + "\n"


def _inline(text: str) -> str:
    """Escape for HTML, turning Markdown's `code` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_block(block: Block, pngs: dict[str, bytes | None]) -> str:
    match block:
        case Heading(text, level):
            return f"<h{level}>{_inline(text)}</h{level}>"
        case Paragraph(text):
            return f"<p>{_inline(text)}</p>"
        case Bullets(items):
            return "<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in items) + "\n</ul>"
        case Table():
            return (f"<h3>{_inline(block.title)}</h3>\n<div class=\"scroll\">{block.to_html()}</div>\n"
                    f"<p class=\"note\">{_inline(block.note)} (<code>tables/{block.name}.csv</code>)</p>")
        case Plot(spec) if pngs.get(spec.name):
            data = base64.b64encode(pngs[spec.name]).decode("ascii")
            return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(spec.caption)}\">"
                    f"<figcaption>{_inline(spec.caption)}</figcaption></figure>")
        case Plot(spec):
            return (f"<p class=\"skipped\">Plot <code>{spec.name}</code> skipped: "
                    f"it needs {html.escape(spec.needs)}.</p>")
    raise TypeError(f"unknown block {block!r}")


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05em; margin: 1.5em 0 .4em; }
.scroll { overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 3px 9px; border-bottom: 1px solid #e4e4e4; text-align: left; }
table.data th { background: #f2f2f2; vertical-align: bottom; }
table.data td { white-space: nowrap; }
table.data .num { text-align: right; }
table.data tbody tr:hover { background: #f7f9fc; }
p.note, figcaption { font-size: 13px; color: #555; }
p.skipped { color: #a33; font-style: italic; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; font-size: 90%; }
"""


def to_html(blocks: list[Block], pngs: dict[str, bytes | None]) -> str:
    """A single self-contained page: CSS inline, plots embedded as base64 PNG."""
    title = next(block.text for block in blocks if isinstance(block, Heading))
    body = "\n".join(_html_block(block, pngs) for block in blocks)
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{_CSS}</style>'
    page = f"<html lang=\"en\">\n<head>\n{head}\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    return "<!DOCTYPE html>\n" + page


def _write_tables(folder: Path, tables: dict[str, Table]) -> None:
    folder.mkdir(exist_ok=True)
    for table in tables.values():
        table.rounded().to_csv(folder / f"{table.name}.csv", index=False)
        (folder / f"{table.name}.md").write_text(_markdown_block(table, {}) + "\n", encoding="utf-8")


def _write_plots(folder: Path, pngs: dict[str, bytes | None]) -> None:
    folder.mkdir(exist_ok=True)
    for name, png in pngs.items():
        if png is not None:
            (folder / f"{name}.png").write_bytes(png)


def write_report(run_dir: str | Path) -> Path:
    """Render tables/, plots/, report.md and report.html from the run folder's files; return report.md's path."""
    run = load_run(run_dir)
    tables = build_tables(run)
    pngs = build_plots(run)
    blocks = document(run, tables)
    _write_tables(run.path / "tables", tables)
    _write_plots(run.path / "plots", pngs)
    (run.path / "report.html").write_text(to_html(blocks, pngs), encoding="utf-8")
    path = run.path / "report.md"
    path.write_text(to_markdown(blocks, pngs), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Re-render a run folder's tables, plots, report.md and report.html from its files.",
    )
    parser.add_argument("run_dir", help="a run folder written by python -m bench.run")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
