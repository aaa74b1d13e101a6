"""What each backbone costs: parameters, compute, latency, peak memory, training throughput.

Every number comes from a library that measures it for PyTorch, nothing hand-rolled:
`torch.utils.flop_counter.FlopCounterMode` counts compute (`compute`), `torch.utils.benchmark`
times calls (`timing`), `torch.cuda` memory statistics or psutil's resident set give memory
(`memory`), `torch.utils.collect_env` describes the machine (`environment`). Models are
random-init: weights change no cost measured here.

``python -m bench.measure --backbones detnet59,resnet50,resnet101`` writes three files:
`measurements.csv` and `flops_by_module.csv`, whose columns `rows` documents, and
`environment.json`. This module runs every measurement of a backbone and writes the rows; a
measurement that runs out of GPU memory is a row saying so, and the others go on.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN

from backbones import create_backbone, create_model

from ..checks import check_backbones, check_batch_split
from ..detector import build_detector
from ..files import write_csv, write_json
from ..layout import RunLayout
from ..progress import progress as progress_bar
from ..settings import MeasureConfig, Profile, TrainConfig
from ..train import AUTOCAST_DTYPES, build_optimizer, resolve_precision, train_step
from .compiled import compiled_timing
from .compute import (
    BREAKDOWN_DEPTH,
    FlopCount,
    count_flops,
    count_params,
    count_rois,
    detector_compute,
    inference_detector,
    num_proposals,
)
from .environment import collect_environment, cpu_model, device_name
from .memory import peak_memory, release_free_memory
from .precision import float32_label, unsupported
from .rows import MeasurementRow, ModuleRow, to_frame
from .timing import (
    Setting,
    current_device,
    infer,
    latency_settings,
    pinned_threads,
    throughput,
    time_call,
)

__all__ = [
    "Setting", "backbone_input", "count_flops", "cpu_model", "detector_compute", "detector_input", "infer",
    "inference_detector", "measure", "measure_backbone", "measurements_frame", "num_proposals", "pinned_threads",
    "summary_table", "time_call",
]

BOXES_PER_IMAGE = 2
# Rows per backbone besides latency: 3 params, 2 compute, 2 memory, 1 throughput.
FIXED_ROWS = 8

OUT_OF_MEMORY = "out of memory"

Row = dict[str, Any]
Add = Callable[[Row], None]


# --- inputs --------------------------------------------------------------------------------


def backbone_input(setting: Setting, size: int) -> torch.Tensor:
    """A random batch for the feature extractor, in the setting's device and memory format."""
    shape = (setting.batch_size, 3, size, size)
    return torch.randn(shape, device=setting.device).contiguous(memory_format=setting.memory_format)


def detector_input(setting: Setting, size: int) -> list[torch.Tensor]:
    """Random images for the detector, which takes a list."""
    return [torch.rand(3, size, size, device=setting.device) for _ in range(setting.batch_size)]


def random_batch(
    batch_size: int, size: int, num_classes: int, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Random images, each with a few random boxes of random foreground classes: every loss is computed."""
    images = [torch.rand(3, size, size, device=device) for _ in range(batch_size)]
    corner = torch.rand(batch_size, BOXES_PER_IMAGE, 2) * size / 2
    extent = (0.25 + torch.rand(batch_size, BOXES_PER_IMAGE, 2)) * size / 2.5  # 0.1 to 0.5 of the side
    boxes = torch.cat([corner, corner + extent], dim=-1).to(device)
    labels = torch.randint(1, num_classes, (batch_size, BOXES_PER_IMAGE), device=device)
    return images, [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]


def train_step_fn(
    detector: FasterRCNN, cfg: TrainConfig, batch: tuple[list[torch.Tensor], list[dict]], device: torch.device
) -> Callable[[], None]:
    """One step exactly as `bench.train.train` takes it: its optimizer groups, precision and scaler."""
    optimizer = build_optimizer(detector, cfg)
    precision = resolve_precision(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    images, targets = batch
    return lambda: train_step(detector, optimizer, scaler, images, targets, precision)


# --- rows ----------------------------------------------------------------------------------


def rows_per_backbone(cfg: MeasureConfig, device: torch.device) -> int:
    return FIXED_ROWS + 2 * len(latency_settings(cfg, device))


def on_device(device: torch.device, **row: Any) -> Row:
    return dict(row, device=device.type, device_name=device_name(device))


def with_note(row: Row, note: str) -> Row:
    return dict(row, note="; ".join(filter(None, [row.get("note"), note])))


def unless_out_of_memory(device: torch.device, rows: list[Row], measure_values: Callable[[], list[Row]]) -> list[Row]:
    """`rows`, each completed by its values from `measure_values()`; all marked out of memory instead
    when that runs out of GPU memory (what it allocated is freed, and the measurement goes on)."""
    try:
        values = measure_values()
    except torch.cuda.OutOfMemoryError:
        values = None
    if values is None:  # outside the handler, so that the traceback's tensors are already released
        release_free_memory(device)
        return [with_note(row, OUT_OF_MEMORY) for row in rows]
    return [dict(row, **value) for row, value in zip(rows, values)]


def compute_row(flops: FlopCount, **row: Any) -> Row:
    return dict(row, metric="compute", dtype="float32", channels_last=False, batch_size=1,
                gmacs=flops.gmacs, gflops=flops.gflops)


def module_rows(name: str, target: str, flops: FlopCount) -> list[Row]:
    return [
        dict(backbone=name, target=target, module=module, gmacs=count / 2e9, gflops=count / 1e9)
        for module, count in flops.by_module.items()
    ]


def latency_fields(measurement: Any) -> Row:
    return dict(latency_ms_median=measurement.median * 1e3, latency_ms_iqr=measurement.iqr * 1e3,
                latency_blocks=len(measurement.times))


def latency_row(model: nn.Module, inputs: Any, setting: Setting, cfg: MeasureConfig, threads: int, **row: Any) -> Row:
    """Time `model(inputs)` in `setting`; the model is moved/converted in place (compiled: a fresh copy
    of it), `inputs` must already be. The first call (the compilation, if any) is not timed."""
    row = on_device(setting.device, **row, metric="latency", dtype=setting.dtype, channels_last=setting.channels_last,
                    compiled=setting.compiled, batch_size=setting.batch_size, threads=threads)
    reason = unsupported(setting.device, setting.dtype)
    if reason:
        return with_note(row, reason)

    def measure_values() -> list[Row]:
        model.to(setting.device, memory_format=setting.memory_format)
        call = partial(infer, inputs=inputs, device_type=setting.device.type, dtype=setting.dtype)
        time = partial(time_call, cfg=cfg, threads=threads, label=f"{row['backbone']} {row['target']}",
                       device=setting.device)
        if not setting.compiled:
            return [latency_fields(time(partial(call, model)))]
        with pinned_threads(threads):  # dynamo guards on the thread count: compile at the one it is timed at
            measurement, fields = compiled_timing(model, call, time)
        return [fields if measurement is None else dict(fields, **latency_fields(measurement))]

    return unless_out_of_memory(setting.device, [row], measure_values)[0]


def measurements_frame(rows: list[Row]) -> pd.DataFrame:
    """measurements.csv's table: `MeasurementRow`'s columns, in order."""
    return to_frame(MeasurementRow, rows)


# --- one backbone, all backbones -----------------------------------------------------------


def classifier_costs(name: str, cfg: MeasureConfig, add: Add) -> list[Row]:
    """Params and MACs with the ImageNet head, as the paper's Table 1; returns the module breakdown."""
    model = create_model(name).eval()
    add(dict(backbone=name, target="classifier", metric="params", params=count_params(model)))
    size = cfg.classification_size
    flops = count_flops(model, torch.randn(1, 3, size, size), depth=BREAKDOWN_DEPTH["classifier"])
    add(compute_row(flops, backbone=name, target="classifier", input_size=size))
    return module_rows(name, "classifier", flops)


def backbone_costs(name: str, cfg: MeasureConfig, device: torch.device, threads: int, add: Add) -> None:
    """Params and latency of the feature extractor alone."""
    model = create_backbone(name).eval()
    add(dict(backbone=name, target="backbone", metric="params", params=count_params(model)))
    size = cfg.detection_size
    for setting in latency_settings(cfg, device):
        inputs = backbone_input(setting, size)
        add(latency_row(model, inputs, setting, cfg, threads, backbone=name, target="backbone", input_size=size))


def detector_costs(
    name: str, profile: Profile, device: torch.device, num_classes: int, threads: int, add: Add
) -> list[Row]:
    """Params, MACs, latency and memory of detector inference; returns the module breakdown."""
    cfg = profile.measure
    size = cfg.detection_size
    detector = inference_detector(name, num_classes, profile.detector, size, num_proposals(profile))
    row = dict(backbone=name, target="detector", input_size=size)
    add(dict(row, metric="params", params=count_params(detector)))
    flops, rois = detector_compute(detector, size)
    add(compute_row(flops, **row, num_rois=rois, uncounted_ops=";".join(flops.uncounted_ops)))
    for setting in latency_settings(cfg, device):
        with count_rois(detector) as counts:
            timed = latency_row(detector, detector_input(setting, size), setting, cfg, threads, **row)
        add(dict(timed, num_rois=counts[0] // setting.batch_size) if counts else timed)
    single = Setting(device, batch_size=1, dtype="float32", channels_last=False)

    def memory() -> list[Row]:
        detector.to(device, memory_format=single.memory_format)
        return [peak_memory(partial(infer, detector, detector_input(single, size), device.type, single.dtype), device)]

    add(unless_out_of_memory(device, [on_device(device, **row, metric="memory", dtype=single.dtype,
                                                channels_last=False, batch_size=1, threads=threads)], memory)[0])
    return module_rows(name, "detector", flops)


def training_costs(
    name: str, profile: Profile, device: torch.device, num_classes: int, threads: int, add: Add,
    weights: Path | None = None, world_size: int = 1,
) -> None:
    """Peak memory of one training step and images/s over a few, at the batch one process of the run
    trains on (its batch over `world_size`), with the run's own policy: its weights file (so frozen
    norm and stem), precision, memory format."""
    size, train = profile.measure.detection_size, profile.train
    batch_size = train.batch_size // world_size
    precision = resolve_precision(train.precision, device)
    dtype = str(AUTOCAST_DTYPES[precision]).removeprefix("torch.") if precision in AUTOCAST_DTYPES \
        else float32_label(device)
    row = on_device(
        device, backbone=name, target="train_step", channels_last=train.channels_last, dtype=dtype,
        batch_size=batch_size, global_batch_size=train.batch_size, input_size=size, threads=threads,
        note=f"batch per GPU: {batch_size} of a global {train.batch_size} over {world_size} processes"
        if world_size > 1 else None,
    )

    def memory_and_throughput() -> list[Row]:
        cfg = replace(profile.detector, min_size=size, max_size=size)
        detector = build_detector(name, num_classes, cfg, weights)
        fmt = torch.channels_last if train.channels_last else torch.preserve_format
        batch = random_batch(batch_size, size, num_classes, device)
        step = train_step_fn(detector.to(device, memory_format=fmt).train(), train, batch, device)
        step()  # warm-up; also creates the optimizer's momentum buffers, part of a step's memory
        return [peak_memory(step, device), {"images_per_s": throughput(step, batch_size, device)}]

    for done in unless_out_of_memory(device, [dict(row, metric="memory"), dict(row, metric="throughput")],
                                     memory_and_throughput):
        add(done)


class TrainedDetector(NamedTuple):
    """A run's trained detector, the seed whose checkpoint it is, and validation images to time it on."""

    detector: FasterRCNN
    seed: int
    images: Sequence[torch.Tensor]


def trained_detector_costs(name: str, trained: TrainedDetector, cfg: MeasureConfig, device: torch.device,
                           threads: int, add: Add) -> None:
    """Latency of a trained detector on validation images at batch 1, float32, as it evaluates: beside the
    controlled random-weight figure, because trained weights keep other numbers of boxes and RoIs. The
    detector goes back to where it was after, so its weights do not stay on the measured device."""
    detector, images = trained.detector, trained.images
    home = next(detector.parameters()).device
    row = on_device(device, backbone=name, target="detector_trained", metric="latency", dtype="float32",
                    channels_last=False, batch_size=1, input_size=cfg.detection_size, threads=threads,
                    note=f"seed {trained.seed}'s checkpoint")

    def timed() -> list[Row]:
        model = detector.to(device).eval()
        inputs = [image.to(device) for image in images]
        turn = itertools.cycle(range(len(inputs)))
        kept: list[int] = []

        def call() -> None:
            kept.append(len(infer(model, [inputs[next(turn)]], device.type, "float32")[0]["boxes"]))

        with count_rois(model) as rois:
            measurement = time_call(call, cfg, threads, label=f"{name} detector_trained", device=device)
        return [dict(latency_fields(measurement), num_rois=round(sum(rois) / len(rois)),
                     num_detections=sum(kept) / len(kept))]

    try:
        add(unless_out_of_memory(device, [row], timed)[0])
    finally:
        detector.to(home)


def measure_backbone(
    name: str,
    profile: Profile,
    device: torch.device,
    num_classes: int,
    bar: Any = None,
    weights: Path | None = None,
    trained: TrainedDetector | None = None,
    world_size: int = 1,
) -> tuple[list[Row], list[Row]]:
    """Every measurement of one backbone: rows of measurements.csv and of flops_by_module.csv.

    `bar`, if given, advances by one per row (`rows_per_backbone` in all). A CUDA `device` is the
    current one meanwhile, and what the backbone's measurements allocated is freed after.
    """
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        if bar is not None:
            bar.set_postfix_str(f"{name} {row['target']} {row['metric']}", refresh=False)
            bar.update()

    torch.manual_seed(0)
    with pinned_threads(profile.measure.threads) as threads, current_device(device):
        try:
            breakdown = classifier_costs(name, profile.measure, add)
            backbone_costs(name, profile.measure, device, threads, add)
            breakdown += detector_costs(name, profile, device, num_classes, threads, add)
            training_costs(name, profile, device, num_classes, threads, add, weights, world_size)
            if trained is not None:
                trained_detector_costs(name, trained, profile.measure, device, threads, add)
        finally:
            release_free_memory(device)
    return rows, breakdown


def measure(
    backbones: list[str],
    profile: Profile,
    device: torch.device,
    out_dir: Path,
    num_classes: int,
    progress: bool = True,
    weights: Mapping[str, Path | None] | None = None,
    trained: Mapping[str, TrainedDetector] | None = None,
    world_size: int = 1,
) -> pd.DataFrame:
    """Measure every backbone; write measurements.csv, flops_by_module.csv, environment.json.

    `weights` gives a backbone's pretrained file where the run used one, so its training step
    is measured frozen as it trained; `trained` a trained detector and validation images to
    time it on (one seed for every backbone); `world_size` the processes the run trains on, whose share of the batch the
    training step is measured at. The CSVs are rewritten after each backbone, so an
    interrupted run keeps what it finished.
    """
    check_backbones(backbones)
    check_batch_split(profile.train.batch_size, world_size)
    layout = RunLayout(Path(out_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    with pinned_threads(profile.measure.threads):
        environment = collect_environment(device)
    write_json(layout.environment, environment)

    rows: list[Row] = []
    breakdown: list[Row] = []
    total = len(backbones) * rows_per_backbone(profile.measure, device) + len(trained or {})
    with progress_bar(total, "measure", enabled=progress) as bar:
        for name in backbones:
            backbone_rows, backbone_breakdown = measure_backbone(
                name, profile, device, num_classes, bar, (weights or {}).get(name), (trained or {}).get(name),
                world_size,
            )
            rows += backbone_rows
            breakdown += backbone_breakdown
            write_csv(layout.measurements, measurements_frame(rows))
            write_csv(layout.flops_by_module, to_frame(ModuleRow, breakdown))
    return measurements_frame(rows)


# --- summary -------------------------------------------------------------------------------

HEADLINES: dict[str, Callable[[pd.Series], str]] = {
    "params": lambda r: f"{r.params / 1e6:.2f} M",
    "compute": lambda r: f"{r.gmacs:.2f} GMACs",
    "latency": lambda r: f"{r.latency_ms_median:.1f} ms (IQR {r.latency_ms_iqr:.1f})",
    "memory": lambda r: f"{r.peak_mem_mb:.0f} MiB" if r.device == "cuda" else f"+{r.rss_peak_mb:.0f} MiB RSS",
    "throughput": lambda r: f"{r.images_per_s:.2f} img/s",
}
SETTING_COLUMNS = ["target", "metric", "device", "dtype", "channels_last", "compiled", "batch_size", "input_size"]
VALUE_COLUMNS = ["params", "gmacs", "latency_ms_median", "peak_mem_mb", "rss_peak_mb", "images_per_s"]


def headline(row: pd.Series) -> str:
    """The row's headline number with its unit, or its note where it has no value (out of memory, not measured)."""
    return row.note if row[VALUE_COLUMNS].isna().all() and isinstance(row.note, str) else HEADLINES[row.metric](row)


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Backbones side by side: one line per setting, each cell its headline number with the unit."""
    cells = frame[SETTING_COLUMNS].astype(object).fillna("").assign(
        backbone=frame.backbone, value=frame.apply(headline, axis=1)
    )
    table = cells.pivot_table(index=SETTING_COLUMNS, columns="backbone", values="value", aggfunc="first", sort=False)
    return table[list(dict.fromkeys(frame.backbone))].reset_index().rename_axis(columns=None)
