"""What each backbone costs: parameters, compute, latency, peak memory, training throughput.

Every number comes from a library that measures it for PyTorch, nothing hand-rolled:
`torch.utils.flop_counter.FlopCounterMode` counts compute (`compute`), `torch.utils.benchmark`
times calls (`timing`), `torch.cuda` memory statistics or psutil's resident set give memory
(`memory`), `torch.utils.collect_env` describes the machine (`environment`). Models are
random-init: weights change no cost measured here.

``python -m bench.measure --backbones detnet59,resnet50,resnet101`` writes three files:
`measurements.csv` and `flops_by_module.csv`, whose columns `rows` documents, and
`environment.json`. This module runs every measurement of a backbone and writes the rows.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN

from backbones import create_backbone, create_model

from ..cli import check_backbones
from ..config import MeasureConfig, Profile, TrainConfig
from ..detector import build_detector
from ..files import write_csv, write_json
from ..progress import progress as progress_bar
from ..train import AUTOCAST_DTYPES, build_optimizer, resolve_precision, train_step
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
from .memory import peak_memory
from .rows import MeasurementRow, ModuleRow, to_frame
from .timing import Setting, infer, latency_settings, pinned_threads, throughput, time_call

__all__ = [
    "Setting", "backbone_input", "count_flops", "cpu_model", "detector_compute", "detector_input", "infer",
    "inference_detector", "measure", "measure_backbone", "measurements_frame", "num_proposals", "pinned_threads",
    "summary_table", "time_call",
]

BOXES_PER_IMAGE = 2
# Rows per backbone besides latency: 3 params, 2 compute, 2 memory, 1 throughput.
FIXED_ROWS = 8

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


def compute_row(flops: FlopCount, **row: Any) -> Row:
    return dict(row, metric="compute", dtype="float32", channels_last=False, batch_size=1,
                gmacs=flops.gmacs, gflops=flops.gflops)


def module_rows(name: str, target: str, flops: FlopCount) -> list[Row]:
    return [
        dict(backbone=name, target=target, module=module, gmacs=count / 2e9, gflops=count / 1e9)
        for module, count in flops.by_module.items()
    ]


def latency_row(model: nn.Module, inputs: Any, setting: Setting, cfg: MeasureConfig, threads: int, **row: Any) -> Row:
    """Time `model(inputs)` in `setting`; the model is moved/converted in place (compiled: a copy of
    it), `inputs` must already be. blocked_autorange's first call, the compilation, is not timed."""
    model.to(setting.device, memory_format=setting.memory_format)
    if setting.compiled:
        model = copy.deepcopy(model)
        model.compile()
    fn = partial(infer, model, inputs, setting.device.type, setting.dtype)
    measurement = time_call(fn, cfg, threads, label=f"{row['backbone']} {row['target']}")
    return on_device(
        setting.device, **row, metric="latency", dtype=setting.dtype, channels_last=setting.channels_last,
        compiled=setting.compiled,
        batch_size=setting.batch_size, threads=threads, latency_ms_median=measurement.median * 1e3,
        latency_ms_iqr=measurement.iqr * 1e3, latency_blocks=len(measurement.times),
    )


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
        add(dict(timed, num_rois=counts[0] // setting.batch_size))
    single = Setting(device, batch_size=1, dtype="float32", channels_last=False)
    detector.to(device, memory_format=single.memory_format)
    memory = peak_memory(partial(infer, detector, detector_input(single, size), device.type, single.dtype), device)
    add(on_device(device, **row, metric="memory", dtype=single.dtype, channels_last=False, batch_size=1,
                  threads=threads, **memory))
    return module_rows(name, "detector", flops)


def training_costs(
    name: str, profile: Profile, device: torch.device, num_classes: int, threads: int, add: Add,
    weights: Path | None = None,
) -> None:
    """Peak memory of one training step and images/s over a few, at the profile's train batch size,
    with the run's own policy: its weights file (so frozen norm and stem), precision, memory format."""
    size, batch_size, train = profile.measure.detection_size, profile.train.batch_size, profile.train
    detector = build_detector(name, num_classes, replace(profile.detector, min_size=size, max_size=size), weights)
    fmt = torch.channels_last if train.channels_last else torch.preserve_format
    batch = random_batch(batch_size, size, num_classes, device)
    step = train_step_fn(detector.to(device, memory_format=fmt).train(), train, batch, device)
    step()  # warm-up; also creates the optimizer's momentum buffers, part of a step's memory
    dtype = AUTOCAST_DTYPES.get(resolve_precision(train.precision, device), torch.float32)
    row = on_device(
        device, backbone=name, target="train_step", channels_last=train.channels_last,
        dtype=str(dtype).removeprefix("torch."), batch_size=batch_size, input_size=size, threads=threads,
    )
    add(dict(row, metric="memory", **peak_memory(step, device)))
    add(dict(row, metric="throughput", images_per_s=throughput(step, batch_size)))


def trained_detector_costs(name: str, detector: FasterRCNN, images: Sequence[torch.Tensor], cfg: MeasureConfig,
                           device: torch.device, threads: int, add: Add) -> None:
    """Latency of a trained detector on validation images at batch 1, float32, as it evaluates: beside the
    controlled random-weight figure, because trained weights keep other numbers of boxes and RoIs."""
    detector = detector.to(device).eval()
    inputs = [image.to(device) for image in images]
    turn = itertools.cycle(range(len(inputs)))
    kept: list[int] = []

    def call() -> None:
        kept.append(len(infer(detector, [inputs[next(turn)]], device.type, "float32")[0]["boxes"]))

    with count_rois(detector) as rois:
        measurement = time_call(call, cfg, threads, label=f"{name} detector_trained")
    add(on_device(device, backbone=name, target="detector_trained", metric="latency", dtype="float32",
                  channels_last=False, batch_size=1, input_size=cfg.detection_size, threads=threads,
                  latency_ms_median=measurement.median * 1e3, latency_ms_iqr=measurement.iqr * 1e3,
                  latency_blocks=len(measurement.times), num_rois=round(sum(rois) / len(rois)),
                  num_detections=sum(kept) / len(kept)))


def measure_backbone(
    name: str,
    profile: Profile,
    device: torch.device,
    num_classes: int,
    bar: Any = None,
    weights: Path | None = None,
    trained: tuple[FasterRCNN, Sequence[torch.Tensor]] | None = None,
) -> tuple[list[Row], list[Row]]:
    """Every measurement of one backbone: rows of measurements.csv and of flops_by_module.csv.

    `bar`, if given, advances by one per row (`rows_per_backbone` in all).
    """
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        if bar is not None:
            bar.set_postfix_str(f"{name} {row['target']} {row['metric']}", refresh=False)
            bar.update()

    torch.manual_seed(0)
    with pinned_threads(profile.measure.threads) as threads:
        breakdown = classifier_costs(name, profile.measure, add)
        backbone_costs(name, profile.measure, device, threads, add)
        breakdown += detector_costs(name, profile, device, num_classes, threads, add)
        training_costs(name, profile, device, num_classes, threads, add, weights)
        if trained is not None:
            trained_detector_costs(name, *trained, profile.measure, device, threads, add)
    return rows, breakdown


def measure(
    backbones: list[str],
    profile: Profile,
    device: torch.device,
    out_dir: Path,
    num_classes: int,
    progress: bool = True,
    weights: Mapping[str, Path | None] | None = None,
    trained: Mapping[str, tuple[FasterRCNN, Sequence[torch.Tensor]]] | None = None,
) -> pd.DataFrame:
    """Measure every backbone; write measurements.csv, flops_by_module.csv, environment.json.

    `weights` gives a backbone's pretrained file where the run used one, so its training step
    is measured frozen as it trained; `trained` a trained detector and validation images to
    time it on. The CSVs are rewritten after each backbone, so an
    interrupted run keeps what it finished.
    """
    check_backbones(backbones)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with pinned_threads(profile.measure.threads):
        environment = collect_environment(device)
    write_json(out_dir / "environment.json", environment)

    rows: list[Row] = []
    breakdown: list[Row] = []
    total = len(backbones) * rows_per_backbone(profile.measure, device) + len(trained or {})
    with progress_bar(total, "measure", enabled=progress) as bar:
        for name in backbones:
            backbone_rows, backbone_breakdown = measure_backbone(name, profile, device, num_classes, bar,
                                                                 (weights or {}).get(name), (trained or {}).get(name))
            rows += backbone_rows
            breakdown += backbone_breakdown
            write_csv(out_dir / "measurements.csv", measurements_frame(rows))
            write_csv(out_dir / "flops_by_module.csv", to_frame(ModuleRow, breakdown))
    return measurements_frame(rows)


# --- summary -------------------------------------------------------------------------------

HEADLINES: dict[str, Callable[[pd.Series], str]] = {
    "params": lambda r: f"{r.params / 1e6:.2f} M",
    "compute": lambda r: f"{r.gmacs:.2f} GMACs",
    "latency": lambda r: f"{r.latency_ms_median:.1f} ms (IQR {r.latency_ms_iqr:.1f})",
    "memory": lambda r: f"{r.peak_mem_mb:.0f} MiB" if r.device == "cuda" else f"+{r.rss_peak_mb:.0f} MiB RSS",
    "throughput": lambda r: f"{r.images_per_s:.2f} img/s",
}
SETTING_COLUMNS = ["target", "metric", "device", "dtype", "channels_last", "batch_size", "input_size"]


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Backbones side by side: one line per setting, each cell its headline number with the unit."""
    cells = frame[SETTING_COLUMNS].astype(object).fillna("").assign(
        backbone=frame.backbone, value=frame.apply(lambda r: HEADLINES[r.metric](r), axis=1)
    )
    table = cells.pivot_table(index=SETTING_COLUMNS, columns="backbone", values="value", aggfunc="first", sort=False)
    return table[list(dict.fromkeys(frame.backbone))].reset_index().rename_axis(columns=None)
