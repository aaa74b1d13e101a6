"""Tables of what the detectors cost: parameters, compute, latency, memory, and the environment.

Read from `measurements.csv` (one row per backbone x setting, see `bench.measure.rows`),
`flops_by_module.csv` and `environment.json`; each function returns a `Table` or None.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .accuracy import paper_rows, paper_values
from .intervals import pairs
from .load import Run
from .table import Table

# The cost table's latency and the trade-off plots use this one setting; tables/latency.csv has all.
HEADLINE = {"batch_size": 1, "dtype": "float32", "channels_last": False}


def measured(frame: pd.DataFrame, column: str, **where: Any) -> float:
    """The first non-NaN `column` of the measurement rows matching `where`, else NaN."""
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value] if key in rows else rows.iloc[0:0]
    values = rows[column].dropna() if column in rows else ()
    return float(values.iloc[0]) if len(values) else np.nan


def headline_device(run: Run) -> str:
    """The run's own device type: latency is measured on the CPU always, on the GPU too when the run used one."""
    return str(run.config.device).split(":")[0]


def measured_device(run: Run) -> str:
    """The name of the headline device as measurements.csv records it, else the configured device."""
    m = run.measurements
    rows = m[m["device"] == headline_device(run)] if m is not None and "device" in m else None
    names = rows["device_name"].dropna() if rows is not None and "device_name" in rows else ()
    return str(names.iloc[0]) if len(names) else str(run.config.device)


def headline_latency(run: Run, backbone: str, target: str) -> tuple[float, float]:
    """(median, IQR) in ms at batch 1, float32, contiguous; NaNs when not measured."""
    where = {"backbone": backbone, "target": target, "metric": "latency", "device": headline_device(run), **HEADLINE}
    m = run.measurements
    return measured(m, "latency_ms_median", **where), measured(m, "latency_ms_iqr", **where)


def peak_memory(run: Run, backbone: str, target: str) -> float:
    """CUDA allocator peak where measured, else the process's resident-set increase (CPU)."""
    where = {"backbone": backbone, "target": target}
    peak = measured(run.measurements, "peak_mem_mb", **where)
    return peak if not np.isnan(peak) else measured(run.measurements, "rss_peak_mb", **where)


def measured_backbones(run: Run) -> list[str]:
    return [name for name in run.backbones if name in set(run.measurements["backbone"])]


def cost_table(run: Run) -> Table | None:
    """Size and compute per backbone, with the paper's FLOPs as ratios to ResNet-50 (comparable across counts)."""
    if run.measurements is None:
        return None
    m, sizes = run.measurements, run.config.profile.measure
    gmacs_cls = f"GMACs (multiply-adds) classifier @{sizes.classification_size}"
    gmacs_det = f"GMACs (multiply-adds) detector @{sizes.detection_size}"
    ratio = "classifier compute relative to resnet50 (×)"
    params = {target: f"params {target} (M)" for target in ("classifier", "backbone", "detector")}
    frame = pd.DataFrame({
        name: {
            **{column: measured(m, "params", backbone=name, target=target) / 1e6 for target, column in params.items()},
            gmacs_cls: measured(m, "gmacs", backbone=name, target="classifier"),
            gmacs_det: measured(m, "gmacs", backbone=name, target="detector"),
        }
        for name in measured_backbones(run)
    }).T
    frame[ratio] = frame[gmacs_cls] / frame[gmacs_cls].get("resnet50", np.nan)
    paper_flops = "FLOPs (paper's count, G)"
    paper = paper_rows("table1", run.backbones, [paper_flops], "Table 1")
    paper[ratio] = paper[paper_flops] / paper_values("table1").at["resnet50", paper_flops]
    return Table(
        "cost", "Cost: parameters and compute", pd.concat([frame, paper]).rename_axis("backbone").reset_index(),
        note=(
            f"Params in millions. GMACs = 10⁹ multiply-adds per image, one multiply-add counted once (as "
            f"torchvision's 'GFLOPS' and timm count): the classifier with its ImageNet head at "
            f"{sizes.classification_size} px, the detector at {sizes.detection_size} px with "
            f"{sizes.num_proposals} proposals per image{_uncounted_note(m)}. Paper rows: the "
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


def _loop_images_per_s(run: Run, name: str) -> float:
    values = [m["train"]["images_per_s"] for (backbone, _), m in run.metrics.items() if backbone == name]
    return float(np.mean(values)) if values else np.nan


def speed_table(run: Run) -> Table | None:
    """Latency at the headline setting, peak memory and training throughput per backbone."""
    if run.measurements is None:
        return None
    m = run.measurements
    latency = {"backbone": "backbone latency (ms, median ± IQR)",
               "detector": "detector latency, random weights, fixed RoIs (ms, median ± IQR)",
               "detector_trained": "detector latency, trained weights (ms, median ± IQR)"}
    memory = {"detector": "peak memory, detector inference (MiB)", "train_step": "peak memory, training step (MiB)"}
    step, loop = "training step images/s (measured)", "training images/s (training loop)"
    kept = "boxes kept per image, trained"
    frame = pd.DataFrame({
        name: {
            **{column: _plus_minus(*headline_latency(run, name, target)) for target, column in latency.items()},
            **{column: peak_memory(run, name, target) for target, column in memory.items()},
            kept: measured(m, "num_detections", backbone=name, target="detector_trained"),
            step: measured(m, "images_per_s", backbone=name, target="train_step", metric="throughput"),
            loop: _loop_images_per_s(run, name),
        }
        for name in measured_backbones(run)
    }).T
    return Table(
        "speed", "Cost: latency, memory and training speed", frame.rename_axis("backbone").reset_index(),
        note=(
            f"Latency on {measured_device(run)}, batch 1, float32, contiguous memory, in milliseconds: median ± "
            f"interquartile range over timed blocks (every setting: `tables/latency.csv`). Random weights with a "
            f"fixed number of RoIs per image is the controlled comparison; trained weights ({_trained_seed(run)}, "
            f"on validation images, post-processing as evaluated) is what a user "
            f"would see, and keeps another number of boxes. {_memory_note(m)} "
            f"Training images/s: a measured step on random images at the batch of one process "
            f"({_step_batch(run)}), and this run's training loop over all its processes (data loading included; "
            f"mean over seeds)."
        ),
        formats=dict.fromkeys(memory.values(), ".0f") | {step: ".2f", loop: ".2f", kept: ".1f"},
    )


def _memory_note(measurements: pd.DataFrame) -> str:
    if "peak_mem_mb" in measurements and measurements["peak_mem_mb"].notna().any():
        return ("Peak memory: torch.cuda.max_memory_allocated during one call above what was allocated before it, "
                "in MiB (weights, inputs and, for a training step, optimizer state are `base_mem_mb` in "
                "measurements.csv), so that it does not depend on what was measured before.")
    return ("Peak memory: the largest increase of the process's resident set during one call, in MiB: a lower "
            "bound of the call's working memory, not comparable with GPU figures.")


def _step_batch(run: Run) -> str:
    """The training step's batch as measured: per GPU of the global batch where they differ (older runs
    measured the global batch and did not record it apart)."""
    per_gpu = measured(run.measurements, "batch_size", target="train_step")
    total = measured(run.measurements, "global_batch_size", target="train_step")
    if np.isnan(per_gpu):
        return f"batch {run.config.profile.train.batch_size}"
    if np.isnan(total) or total == per_gpu:
        return f"batch {per_gpu:.0f}"
    return f"batch {per_gpu:.0f} of a global {total:.0f}"


def _trained_seed(run: Run) -> str:
    """Which checkpoint the trained rows timed, as they say (the first seed where a row of an older run says nothing)."""
    m = run.measurements
    notes = m.loc[m["target"] == "detector_trained", "note"].dropna() if "note" in m else ()
    said = [part for note in notes for part in str(note).split("; ") if part.endswith("'s checkpoint")]
    return said[0] if said else f"seed {run.seeds[0]}'s checkpoint"


def _plus_minus(median: float, iqr: float) -> str | float:
    return np.nan if np.isnan(median) else f"{median:.1f} ± {iqr:.1f}"


_LATENCY_COLUMNS = {
    "backbone": "backbone", "target": "target", "metric": "metric", "device_name": "device", "dtype": "dtype",
    "channels_last": "channels_last", "compiled": "compiled", "compiled_graphs": "graphs", "batch_size": "batch",
    "input_size": "input (px)", "threads": "threads",
    "latency_ms_median": "latency median (ms)", "latency_ms_iqr": "latency IQR (ms)", "images_per_s": "images/s",
    "num_rois": "RoIs per image", "num_detections": "boxes kept per image", "note": "note",
}


def latency_table(run: Run) -> Table | None:
    m = run.measurements
    rows = None if m is None else m[m["metric"].isin(["latency", "throughput"])]
    if rows is None or rows.empty:
        return None
    return Table(
        "latency", "Latency and throughput, every measured setting",
        rows.reindex(columns=list(_LATENCY_COLUMNS)).rename(columns=_LATENCY_COLUMNS),
        note="Latency: median and interquartile range over timed blocks, in milliseconds per batch. "
        "Throughput (training step): images per second. dtype `float32` ran with TF32 off, `tf32` with it on; "
        "`graphs`: what torch.compile compiled (a row it did not compile says so in `note`).",
        formats={"batch": ".0f", "graphs": ".0f", "input (px)": ".0f", "threads": ".0f", "latency median (ms)": ".2f",
                 "latency IQR (ms)": ".2f", "images/s": ".2f", "RoIs per image": ".0f", "boxes kept per image": ".1f"},
    )


def compute_by_module_table(run: Run) -> Table | None:
    if run.flops is None or run.flops.empty:
        return None
    frame = run.flops.pivot_table(index=["target", "module"], columns="backbone", values="gmacs")  # sorted: a tree
    frame = frame.reindex(columns=[b for b in run.backbones if b in frame.columns])
    return Table(
        "compute_by_module", "Compute by module (GMACs, multiply-adds)", frame.reset_index().rename_axis(columns=None),
        note="10⁹ multiply-adds per image, one multiply-add counted once, at the sizes of the cost table.",
        formats=dict.fromkeys(frame.columns, ".2f"),
    )


def latency_differences_table(run: Run) -> Table | None:
    if run.measurements is None:
        return None
    rows = []
    for target in ("backbone", "detector"):
        for a, b in pairs(run.backbones):
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
        "latency_differences", "Latency differences between backbones (ms)", pd.DataFrame(rows),
        note=f"Median latency at batch 1, float32 on {measured_device(run)}, in milliseconds. Within noise when "
        "the interquartile ranges (taken as median ± IQR/2) overlap.",
        formats={"latency difference (ms)": "+.1f"},
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
        "environment", "Environment (recorded by the run)",
        pd.DataFrame({"item": list(items), "value": [None if v is None else str(v) for v in items.values()]}),
        note="From `environment.json`, as written when the run was measured.",
    )
