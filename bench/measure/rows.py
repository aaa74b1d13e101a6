"""The columns of measurements.csv and flops_by_module.csv: one dataclass field per column.

Each field is a column, in file order, named with its unit and documented in its metadata
("doc"). A dict of measurements becomes a table through `to_frame`, which refuses a key that
is no column (instead of silently dropping it) and writes integer columns as pandas'
nullable "Int64", so that 1 is written "1", not "1.0", in a column with empty cells.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_type_hints

import pandas as pd


def column(doc: str, *, always: bool = False) -> Any:
    """A documented column; unless `always` filled, a row may leave it empty."""
    return field(metadata={"doc": doc}) if always else field(default=None, metadata={"doc": doc})


@dataclass
class MeasurementRow:
    """A row of measurements.csv: one backbone x setting; a column that does not apply is empty."""

    backbone: str = column("timm model name.", always=True)
    target: str = column(
        "What ran. `classifier`: the timm model with its ImageNet head (the paper's Table 1 setting); "
        "`backbone`: the same network as the detector's feature extractor (stride 4+ feature maps); "
        "`detector`: Faster R-CNN + FPN inference, from a list of images to boxes (resize/normalise "
        "transform and post-processing included); `train_step`: one detector training step (forward "
        "with losses, backward, SGD update); `detector_trained`: the detector with a run's trained weights "
        "(its `note` names the seed: the first in which every backbone kept its checkpoint) on validation "
        "images, post-processing as it evaluates.",
        always=True,
    )
    metric: str = column(
        "`params`, `compute`, `latency`, `memory` or `throughput`: says which of the value columns are filled.",
        always=True,
    )
    device: str | None = column(
        "`cpu` or `cuda`, where it ran; empty for params and compute, which do not depend on it "
        "(compute is counted on the CPU)."
    )
    device_name: str | None = column("The CPU model or the CUDA device's name.")
    dtype: str | None = column(
        "`float32` (on a GPU with TF32 off for convolutions and matmuls), `tf32` (TF32 on; CUDA, compute "
        "capability 8.0+), or `bfloat16` for inference under `torch.autocast`. A training step runs with the "
        "run's own precision and flags: `bfloat16`/`float16` under autocast, `float32`, or `tf32` where its "
        "float32 step really ran with TF32 (cuDNN's default on Ampere+ GPUs)."
    )
    channels_last: bool | None = column("Model (and, for the backbone, input) in channels-last memory format.")
    compiled: bool | None = column(
        "Model compiled with `torch.compile` (a fresh copy after `torch.compiler.reset()`, static shapes; "
        "compilation excluded from the timing). False with a `note` and no latency where compiling was asked "
        "for but produced no graph, failed, hit the recompile limit or recompiled while timed."
    )
    compiled_graphs: int | None = column(
        "Graphs dynamo compiled for the model (more than one: graph breaks), from its `unique_graphs` counter."
    )
    batch_size: int | None = column(
        "Images per call; for a training step, the batch of one process (GPU): the run's batch over its world size."
    )
    global_batch_size: int | None = column(
        "Training step only: the run's batch over all its processes, `batch_size` x the world size."
    )
    input_size: int | None = column(
        "Side of the square input images, in pixels; the detector is built with min/max size equal to "
        "it, so it does not resize them."
    )
    threads: int | None = column(
        "`torch.get_num_threads()` during the measurement (`MeasureConfig.threads`, or all the cores torch sees)."
    )
    params: int | None = column("Number of parameters, trainable or not (frozen BatchNorm statistics are buffers).")
    gmacs: float | None = column(
        "Billions of multiply-accumulates for one forward at batch 1: FlopCounterMode's FLOPs / 2 (it "
        "counts a multiply-add as 2 FLOPs). aten ops only: see `uncounted_ops`."
    )
    gflops: float | None = column("Billions of FLOPs, the same count as `gmacs` x 2.")
    num_rois: int | None = column("RoIs per image the detector's box head processed.")
    num_detections: float | None = column(
        "Boxes per image kept after post-processing (score threshold, NMS), mean over the timed images: "
        "trained and random weights keep very different numbers, and that changes the cost."
    )
    uncounted_ops: str | None = column(
        "`;`-separated ops outside aten that ran during the counted forward "
        "(`torchvision::nms;torchvision::roi_align`): FlopCounterMode has no formula for them, so their "
        "arithmetic is missing from `gmacs`."
    )
    latency_ms_median: float | None = column(
        "Milliseconds per call, median over the timed blocks (`torch.utils.benchmark.Timer.blocked_autorange`)."
    )
    latency_ms_iqr: float | None = column("Interquartile range of the milliseconds per call over the same blocks.")
    latency_blocks: int | None = column("How many blocks the latency statistics come from (at least `repeats`).")
    peak_mem_mb: float | None = column(
        "CUDA only: `torch.cuda.max_memory_allocated` during one call minus `base_mem_mb`, in MiB: the call's "
        "working memory (activations, outputs; for a training step gradients too), whatever earlier "
        "measurements left allocated."
    )
    base_mem_mb: float | None = column(
        "CUDA only: `torch.cuda.memory_allocated` just before the call, in MiB: the model's weights, its "
        "inputs (and optimizer state, for a training step). `base_mem_mb + peak_mem_mb` is the absolute peak."
    )
    reserved_mem_mb: float | None = column(
        "CUDA only: how much `torch.cuda.max_memory_reserved` rose during the call over the memory reserved "
        "before it (the caching allocator's cache emptied first), in MiB."
    )
    rss_peak_mb: float | None = column(
        "CPU only: largest increase of the process's resident set over its value just before one call, "
        "in MiB, sampled every millisecond by a thread. Memory freed earlier is first returned to the "
        "system (glibc's `malloc_trim`), so that the call's working memory shows as growth; weights and "
        "inputs, already resident, are not included, unlike in `peak_mem_mb`. A lower bound: a peak "
        "shorter than a millisecond can be missed."
    )
    images_per_s: float | None = column(
        "Training throughput, images per second over `TRAIN_STEPS` steps after one warm-up step, at "
        "`batch_size` random images with random boxes."
    )
    note: str | None = column(
        "Why a row has no value (`out of memory`; a dtype the device lacks natively; torch.compile not "
        "in effect), what its batch means (a training step's batch per GPU of the global one), or whose "
        "checkpoint a `detector_trained` row timed."
    )


@dataclass
class ModuleRow:
    """A row of flops_by_module.csv: the compute of one module, down to the backbone's stages
    (`layer1` in the classifier; `backbone.body.layer1`, `backbone.fpn`, `rpn.head`,
    `roi_heads.box_head` in the detector)."""

    backbone: str = column("timm model name.", always=True)
    target: str = column("`classifier` or `detector`, as in measurements.csv.", always=True)
    module: str = column("Module path inside the target, parents before children.", always=True)
    gmacs: float = column("Billions of multiply-accumulates of the module in one forward at batch 1.", always=True)
    gflops: float = column("Billions of FLOPs, `gmacs` x 2.", always=True)


def column_names(schema: type) -> list[str]:
    """The columns of `schema`, in file order."""
    return [f.name for f in fields(schema)]


def _is_integer(hint: Any) -> bool:
    return int in (hint, *get_args(hint))


def to_frame(schema: type, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`rows` as a table with `schema`'s columns; a key a row lacks is an empty cell."""
    names = column_names(schema)
    unknown = set().union(*rows) - set(names)
    if unknown:
        raise ValueError(f"{schema.__name__} has no column {', '.join(sorted(unknown))}")
    integers = {name: "Int64" for name, hint in get_type_hints(schema).items() if _is_integer(hint)}
    return pd.DataFrame(rows, columns=names).astype(integers)
