"""What each backbone costs: parameters, compute, latency, peak memory, training throughput.

Every number comes from a library that measures it for PyTorch, nothing hand-rolled:
`torch.utils.flop_counter.FlopCounterMode` counts compute, `torch.utils.benchmark` times
calls (median and IQR over blocks, CUDA synchronised), `torch.cuda` memory statistics or
psutil's resident set give memory. Models are random-init: weights change no cost measured here.

Detector inference runs with the RPN handing exactly `num_proposals` RoIs per image to the
box head (`inference_detector`): with random weights the RPN's boxes and NMS would keep an
arbitrary, backbone-dependent number, and the box head's cost is proportional to it.

``python -m bench.measure --backbones detnet59,resnet50,resnet101`` writes three files:
`measurements.csv` (below), `flops_by_module.csv` and `environment.json`.

Columns of measurements.csv
---------------------------
One row per backbone x setting; a column that does not apply to a row is empty.

- ``backbone``: timm model name.
- ``target``: what ran. ``classifier``: the timm model with its ImageNet head (the paper's
  Table 1 setting); ``backbone``: the same network as the detector's feature extractor
  (stride 4+ feature maps); ``detector``: Faster R-CNN + FPN inference, from a list of images
  to boxes (resize/normalise transform and post-processing included); ``train_step``: one
  detector training step (forward with losses, backward, SGD update).
- ``metric``: ``params``, ``compute``, ``latency``, ``memory`` or ``throughput``; says which
  of the value columns below are filled.
- ``device``: ``cpu`` or ``cuda``, where it ran; empty for params and compute, which do not
  depend on it (compute is counted on the CPU).
- ``device_name``: the CPU model or the CUDA device's name.
- ``dtype``: ``float32``, or ``bfloat16`` for inference under `torch.autocast`; ``float16``
  for a CUDA training step when the profile trains with AMP.
- ``channels_last``: model (and, for the backbone, input) in channels-last memory format.
- ``batch_size``: images per call.
- ``input_size``: side of the square input images, in pixels; the detector is built with
  min/max size equal to it, so it does not resize them.
- ``threads``: `torch.get_num_threads()` during the measurement (``MeasureConfig.threads``,
  or all the cores torch sees).
- ``params``: number of parameters, trainable or not (frozen BatchNorm statistics are buffers).
- ``gmacs``: billions of multiply-accumulates for one forward at batch 1: FlopCounterMode's
  FLOPs / 2 (it counts a multiply-add as 2 FLOPs). aten ops only: see ``uncounted_ops``.
- ``gflops``: billions of FLOPs, the same count as ``gmacs`` x 2.
- ``num_rois``: RoIs per image the detector's box head processed.
- ``uncounted_ops``: ``;``-separated ops outside aten that ran during the counted forward
  (``torchvision::nms;torchvision::roi_align``): FlopCounterMode has no formula for them, so
  their arithmetic is missing from ``gmacs``.
- ``latency_ms_median``, ``latency_ms_iqr``: milliseconds per call, median and interquartile
  range over the timed blocks (`torch.utils.benchmark.Timer.blocked_autorange`).
- ``latency_blocks``: how many blocks those statistics come from (at least ``repeats``).
- ``peak_mem_mb``: CUDA only: `torch.cuda.max_memory_allocated` during one call, in MiB;
  absolute, so weights, inputs (and optimizer state, for a training step) are included.
- ``reserved_mem_mb``: CUDA only: `torch.cuda.max_memory_reserved` during the call, what the
  caching allocator held (its cache emptied first), in MiB.
- ``rss_peak_mb``: CPU only: largest increase of the process's resident set over its value
  just before one call, in MiB, sampled every millisecond by a thread. Memory freed earlier
  is first returned to the system (glibc's `malloc_trim`), so that the call's working memory
  shows as growth; weights and inputs, already resident, are not included, unlike in
  ``peak_mem_mb``. A lower bound: a peak shorter than a millisecond can be missed.
- ``images_per_s``: training throughput, images per second over `TRAIN_STEPS` steps after
  one warm-up step, at ``batch_size`` random images with random boxes.

`flops_by_module.csv` breaks ``gmacs``/``gflops`` down by module (columns ``backbone``,
``target``, ``module``, ``gmacs``, ``gflops``), down to the backbone's stages
(`BREAKDOWN_DEPTH`): ``layer1`` in the classifier, ``backbone.body.layer1``,
``backbone.fpn``, ``rpn.head``, ``roi_heads.box_head`` in the detector.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import psutil
import timm
import torch
import torch.nn as nn
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FasterRCNN
from tqdm import tqdm

from backbones import create_backbone

from .cli import UsageError, check_backbones, check_device, fresh_dir, parse_backbones
from .config import PROFILES, DetectorConfig, MeasureConfig, Profile, TrainConfig, get_profile
from .detector import build_detector
from .train import amp_enabled, build_optimizer, train_step

# torch.utils.benchmark imports torch.utils.cpp_extension, which warns "No CUDA runtime is
# found" on a CUDA build of torch without a GPU; nothing here compiles C++, so that is noise.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
import torch.utils.benchmark as benchmark  # noqa: E402

COLUMNS = (
    "backbone", "target", "metric", "device", "device_name", "dtype", "channels_last", "batch_size",
    "input_size", "threads", "params", "gmacs", "gflops", "num_rois", "uncounted_ops",
    "latency_ms_median", "latency_ms_iqr", "latency_blocks", "peak_mem_mb", "reserved_mem_mb",
    "rss_peak_mb", "images_per_s",
)
INTEGER_COLUMNS = ("batch_size", "input_size", "threads", "params", "num_rois", "latency_blocks")
MODULE_COLUMNS = ("backbone", "target", "module", "gmacs", "gflops")
DTYPES = ("float32", "bfloat16")
# Module depth kept in flops_by_module.csv: the backbone's stages in each model.
BREAKDOWN_DEPTH = {"classifier": 1, "detector": 3}
TRAIN_STEPS = 3  # timed, after one warm-up step
BOXES_PER_IMAGE = 2
MIB = 2**20
RSS_INTERVAL_S = 1e-3
# Rows per backbone besides latency: 3 params, 2 compute, 2 memory, 1 throughput.
FIXED_ROWS = 8


# --- environment -------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name; platform.processor() is often empty or just 'x86_64' on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def git_commit() -> str | None:
    """The repository's HEAD, "+dirty" when tracked files differ from it; None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


def collect_environment(device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Versions, machine and code version: what a latency number depends on besides the model."""
    cuda = device.type == "cuda"
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": device_name(device),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "git_commit": git_commit(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --- parameters and compute ----------------------------------------------------------------


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class FlopCount:
    """One forward's FLOPs (2 per multiply-add, as FlopCounterMode counts) and what they leave out."""

    flops: int
    by_module: dict[str, int]  # module path (root excluded) -> FLOPs, down to the requested depth
    uncounted_ops: list[str]  # sorted, e.g. ["torchvision::nms", "torchvision::roi_align"]

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


class OpRecorder(TorchDispatchMode):
    """Records the ops outside aten that run: FlopCounterMode only has formulas for aten ops,
    so custom ops (torchvision's roi_align, nms) would otherwise count as silently zero."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace not in ("aten", "prim", "prims"):
            self.ops.add(func.name())
        return func(*args, **(kwargs or {}))


def count_flops(model: nn.Module, *inputs: Any, depth: int = 1) -> FlopCount:
    """Count one no-grad forward of `model(*inputs)`, with a per-module breakdown to `depth`."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter, OpRecorder() as recorder:
        model(*inputs)
    root = type(model).__name__  # FlopCounterMode names modules "<root class>.<path>"
    counts = {name: sum(by_op.values()) for name, by_op in counter.get_flop_counts().items()}
    by_module = {  # in the model's own order, parents before children
        name: counts[f"{root}.{name}"]
        for name, _ in model.named_modules()
        if f"{root}.{name}" in counts and name.count(".") < depth
    }
    return FlopCount(counter.get_total_flops(), by_module, sorted(recorder.ops))


def num_proposals(profile: Profile) -> int:
    """RoIs per image for detector costs: as the profile's detector evaluates, unless set."""
    return profile.measure.num_proposals or profile.detector.rpn_post_nms_top_n_test


def inference_detector(
    name: str, num_classes: int, cfg: DetectorConfig, size: int, num_proposals: int
) -> FasterRCNN:
    """The detector in eval mode, at `size` square, with exactly `num_proposals` RoIs per image.

    Random-init RPN regressions push many boxes out of the image (dropped as empty) and NMS
    keeps a data-dependent number, while the box head's cost is proportional to the count.
    So the RPN's box deltas are zeroed (its proposals are its anchors, ranked by objectness),
    NMS (IoU threshold 1.0) and score filtering are off, and the post-NMS top-n is
    `num_proposals` (the per-level pre-NMS top-n at least that): the box head sees as many
    RoIs as a trained detector keeping its top-n.
    """
    cfg = replace(
        cfg, min_size=size, max_size=size, rpn_post_nms_top_n_test=num_proposals,
        rpn_pre_nms_top_n_test=max(cfg.rpn_pre_nms_top_n_test, num_proposals),
    )
    detector = build_detector(name, num_classes, cfg)
    detector.rpn.nms_thresh, detector.rpn.score_thresh = 1.0, 0.0
    nn.init.zeros_(detector.rpn.head.bbox_pred.weight)
    nn.init.zeros_(detector.rpn.head.bbox_pred.bias)
    return detector.eval()


@contextmanager
def count_rois(detector: FasterRCNN) -> Iterator[list[int]]:
    """Collect, per forward, how many RoIs the box head processed (all images together)."""
    counts: list[int] = []
    hook = detector.roi_heads.box_head.register_forward_hook(lambda module, args, out: counts.append(out.shape[0]))
    try:
        yield counts
    finally:
        hook.remove()


def detector_compute(detector: FasterRCNN, size: int) -> tuple[FlopCount, int]:
    """FLOPs of one image through the detector, and the RoIs its box head saw."""
    with count_rois(detector) as rois:
        flops = count_flops(detector, [torch.rand(3, size, size)], depth=BREAKDOWN_DEPTH["detector"])
    return flops, rois[0]


# --- latency, memory, throughput -----------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One latency configuration."""

    device: torch.device
    batch_size: int
    dtype: str
    channels_last: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def latency_settings(cfg: MeasureConfig, device: torch.device) -> list[Setting]:
    """Every combination of the configured options; the CPU always, the GPU too when asked for."""
    devices = [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
    return [Setting(*values) for values in itertools.product(devices, cfg.batch_sizes, cfg.dtypes, cfg.channels_last)]


@contextmanager
def pinned_threads(threads: int) -> Iterator[int]:
    """Fix torch's CPU thread count for the block (0: keep the current one); yields the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def autocast(device_type: str, dtype: str) -> torch.autocast:
    """float32 runs as is; bfloat16 runs under autocast, as mixed-precision inference does."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def infer(model: nn.Module, inputs: Any, device_type: str, dtype: str) -> Any:
    with torch.inference_mode(), autocast(device_type, dtype):
        return model(inputs)


def time_call(fn: Callable[[], Any], cfg: MeasureConfig, threads: int, label: str = "") -> benchmark.Measurement:
    """Median and IQR of `fn` over at least `cfg.repeats` blocks of torch.utils.benchmark.

    blocked_autorange first calls `fn` to size its blocks, which is the warm-up, and stops
    after `min_run_time`: one or two blocks for a call slower than that. It is run again for
    the missing blocks' worth of time until there are enough, and the parts are merged.
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, label=label)
    parts = [timer.blocked_autorange(min_run_time=cfg.min_run_time)]
    while (missing := cfg.repeats - sum(len(part.times) for part in parts)) > 0:
        block_s = parts[-1].median * parts[-1].number_per_run
        parts.append(timer.blocked_autorange(min_run_time=missing * block_s))
    return benchmark.Measurement.merge(parts)[0]


class RSSPeak:
    """Largest rise of this process's resident set while the block runs, sampled by a thread.

    Sampling every `interval` s can miss a peak shorter than that; the end value is taken too.
    """

    def __init__(self, interval: float = RSS_INTERVAL_S) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        return self.process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RSSPeak:
        self.start = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.start) / MIB


def release_free_memory(device: torch.device) -> None:
    """Return memory freed by earlier calls to the system, so a call that needs it again shows it.

    Without this, glibc (CPU) and the caching allocator (CUDA) hand the next call memory they
    kept, and the resident set / reserved memory need not grow at all.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: rss_peak_mb is then a looser lower bound


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, float]:
    """Peak memory of one call: CUDA allocator statistics on a GPU, the resident set's rise on the CPU."""
    release_free_memory(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return {
            "peak_mem_mb": torch.cuda.max_memory_allocated(device) / MIB,
            "reserved_mem_mb": torch.cuda.max_memory_reserved(device) / MIB,
        }
    with RSSPeak() as rss:
        fn()
    return {"rss_peak_mb": rss.increase_mb}


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
    """One step exactly as `bench.train.train` takes it (AMP on CUDA if the profile uses it)."""
    optimizer = build_optimizer(detector, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_enabled(cfg, device))
    images, targets = batch
    return lambda: train_step(detector, optimizer, scaler, images, targets)


def throughput(step: Callable[[], None], batch_size: int, steps: int = TRAIN_STEPS) -> float:
    """Images per second over `steps` calls after one warm-up; `benchmark.timer` synchronises CUDA."""
    step()
    start = benchmark.timer()
    for _ in range(steps):
        step()
    return steps * batch_size / (benchmark.timer() - start)


# --- one backbone, all backbones -----------------------------------------------------------


def rows_per_backbone(cfg: MeasureConfig, device: torch.device) -> int:
    return FIXED_ROWS + 2 * len(latency_settings(cfg, device))


def on_device(device: torch.device, **row: Any) -> dict[str, Any]:
    return dict(row, device=device.type, device_name=device_name(device))


def compute_row(flops: FlopCount, **row: Any) -> dict[str, Any]:
    return dict(row, metric="compute", dtype="float32", channels_last=False, batch_size=1,
                gmacs=flops.gmacs, gflops=flops.gflops)


def module_rows(name: str, target: str, flops: FlopCount) -> list[dict[str, Any]]:
    return [
        dict(backbone=name, target=target, module=module, gmacs=count / 2e9, gflops=count / 1e9)
        for module, count in flops.by_module.items()
    ]


def latency_row(
    model: nn.Module, inputs: Any, setting: Setting, cfg: MeasureConfig, threads: int, **row: Any
) -> dict[str, Any]:
    """Time `model(inputs)` in `setting`; the model is moved/converted in place, `inputs` must already be."""
    model.to(setting.device, memory_format=setting.memory_format)
    fn = partial(infer, model, inputs, setting.device.type, setting.dtype)
    measurement = time_call(fn, cfg, threads, label=f"{row['backbone']} {row['target']}")
    return on_device(
        setting.device, **row, metric="latency", dtype=setting.dtype, channels_last=setting.channels_last,
        batch_size=setting.batch_size, threads=threads, latency_ms_median=measurement.median * 1e3,
        latency_ms_iqr=measurement.iqr * 1e3, latency_blocks=len(measurement.times),
    )


def backbone_input(setting: Setting, size: int) -> torch.Tensor:
    shape = (setting.batch_size, 3, size, size)
    return torch.randn(shape, device=setting.device).contiguous(memory_format=setting.memory_format)


def detector_input(setting: Setting, size: int) -> list[torch.Tensor]:
    return [torch.rand(3, size, size, device=setting.device) for _ in range(setting.batch_size)]


Add = Callable[[dict[str, Any]], None]


def classifier_costs(name: str, cfg: MeasureConfig, add: Add) -> list[dict[str, Any]]:
    """Params and MACs with the ImageNet head, as the paper's Table 1; returns the module breakdown."""
    model = timm.create_model(name).eval()
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
) -> list[dict[str, Any]]:
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
    name: str, profile: Profile, device: torch.device, num_classes: int, threads: int, add: Add
) -> None:
    """Peak memory of one training step and images/s over a few, at the profile's train batch size."""
    size, batch_size = profile.measure.detection_size, profile.train.batch_size
    detector = build_detector(name, num_classes, replace(profile.detector, min_size=size, max_size=size))
    batch = random_batch(batch_size, size, num_classes, device)
    step = train_step_fn(detector.to(device).train(), profile.train, batch, device)
    step()  # warm-up; also creates the optimizer's momentum buffers, part of a step's memory
    row = on_device(
        device, backbone=name, target="train_step", channels_last=False,
        dtype="float16" if amp_enabled(profile.train, device) else "float32",
        batch_size=batch_size, input_size=size, threads=threads,
    )
    add(dict(row, metric="memory", **peak_memory(step, device)))
    add(dict(row, metric="throughput", images_per_s=throughput(step, batch_size)))


def measure_backbone(
    name: str,
    profile: Profile,
    device: torch.device,
    num_classes: int,
    bar: tqdm | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every measurement of one backbone: rows of measurements.csv and of flops_by_module.csv.

    `bar`, if given, advances by one per row (`rows_per_backbone` in all).
    """
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if bar is not None:
            bar.set_postfix_str(f"{name} {row['target']} {row['metric']}", refresh=False)
            bar.update()

    torch.manual_seed(0)
    with pinned_threads(profile.measure.threads) as threads:
        breakdown = classifier_costs(name, profile.measure, add)
        backbone_costs(name, profile.measure, device, threads, add)
        breakdown += detector_costs(name, profile, device, num_classes, threads, add)
        training_costs(name, profile, device, num_classes, threads, add)
    return rows, breakdown


def measure(
    backbones: list[str],
    profile: Profile,
    device: torch.device,
    out_dir: Path,
    num_classes: int,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure every backbone; write measurements.csv, flops_by_module.csv, environment.json.

    The CSVs are rewritten after each backbone, so an interrupted run keeps what it finished.
    """
    check_backbones(backbones)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with pinned_threads(profile.measure.threads):
        environment = collect_environment(device)
    (out_dir / "environment.json").write_text(json.dumps(environment, indent=2) + "\n")

    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    total = len(backbones) * rows_per_backbone(profile.measure, device)
    with tqdm(total=total, desc="measure", disable=not progress, dynamic_ncols=True) as bar:
        for name in backbones:
            backbone_rows, backbone_breakdown = measure_backbone(name, profile, device, num_classes, bar)
            rows += backbone_rows
            breakdown += backbone_breakdown
            measurements_frame(rows).to_csv(out_dir / "measurements.csv", index=False)
            pd.DataFrame(breakdown, columns=MODULE_COLUMNS).to_csv(out_dir / "flops_by_module.csv", index=False)
    return measurements_frame(rows)


def measurements_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows in the documented column order; counts as nullable integers, so "1" is not written "1.0"."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({column: "Int64" for column in INTEGER_COLUMNS})


# --- summary and command line --------------------------------------------------------------

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m bench.measure", description="Measure the cost of detection backbones.")
    parser.add_argument("--backbones", required=True, help="comma-separated timm names: detnet59,resnet50,resnet101")
    parser.add_argument("--device", default="cpu", help="cpu or cuda; latency is measured on the CPU too")
    parser.add_argument("--out", type=Path, help="new or empty folder (default results/<date>-<time>-measure)")
    parser.add_argument("--profile", choices=tuple(PROFILES), default="default", help="settings from bench.config")
    parser.add_argument("--num-classes", type=int, default=81, help="detector classes with background (COCO: 80 + 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse_args(argv)
        backbones = parse_backbones(args.backbones)
        device = check_device(args.device)
        if args.num_classes < 2:
            raise UsageError(f"--num-classes must be at least 2 (background + one class), not {args.num_classes}")
        out = fresh_dir(args.out, "measure")
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    frame = measure(backbones, get_profile(args.profile), device, out, args.num_classes, progress=not args.no_progress)
    print(summary_table(frame).to_markdown(index=False))
    print(f"\nwrote {out}/measurements.csv, flops_by_module.csv, environment.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
