"""How long a call takes: latency settings, and timing with `torch.utils.benchmark`.

Latency is the median and IQR over blocks of `torch.utils.benchmark.Timer.blocked_autorange`,
at a fixed torch thread count; training throughput is images per second over a few steps. On
a GPU the clock synchronises the measured device by name (benchmark's own timer synchronises
only the current one, so `cuda:1` would time launches, not work), and `current_device` makes it current.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..settings import MeasureConfig
from .precision import precision

# torch.utils.benchmark imports torch.utils.cpp_extension, which says "No CUDA runtime is
# found" on a CUDA build of torch without a GPU (a log warning, or in older releases such as
# 2.4 a print to stderr); nothing here compiles C++, and that line would break one-line errors.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
with contextlib.redirect_stderr(io.StringIO()):
    import torch.utils.benchmark as benchmark

TRAIN_STEPS = 3  # timed, after one warm-up step


@dataclass(frozen=True)
class Setting:
    """One latency configuration."""

    device: torch.device
    batch_size: int
    dtype: str
    channels_last: bool
    compiled: bool = False  # torch.compile'd (a copy of the model); its compilation is the warm-up call

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def latency_settings(cfg: MeasureConfig, device: torch.device) -> list[Setting]:
    """Every combination of the configured options: on the CPU, and on the GPU too when asked for
    (then the CPU only if `cfg.cpu`)."""
    devices = [device] if device.type == "cuda" and not cfg.cpu else \
        [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
    combinations = itertools.product(devices, cfg.batch_sizes, cfg.dtypes, cfg.channels_last, cfg.compile)
    return [Setting(*values) for values in combinations]


@contextmanager
def pinned_threads(threads: int) -> Iterator[int]:
    """Fix torch's CPU thread count for the block (0: keep the current one); yields the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextmanager
def current_device(device: torch.device) -> Iterator[None]:
    """Make a CUDA `device` the current one for the block (kernels without an explicit device, cuDNN handles)."""
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        yield


def device_clock(device: torch.device) -> Callable[[], float]:
    """A clock that first waits for `device`'s queued work, so that a call's time is its work's."""
    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return clock


def infer(model: nn.Module, inputs: Any, device_type: str, dtype: str) -> Any:
    """One inference call, as it is timed: no autograd, in `dtype` (`precision.precision`)."""
    with torch.inference_mode(), precision(device_type, dtype):
        return model(inputs)


def time_call(
    fn: Callable[[], Any], cfg: MeasureConfig, threads: int, label: str = "", device: torch.device = torch.device("cpu")
) -> benchmark.Measurement:
    """Median and IQR of `fn` over at least `cfg.repeats` blocks of torch.utils.benchmark.

    blocked_autorange first calls `fn` to size its blocks, which is the warm-up, and stops
    after `min_run_time`: one or two blocks for a call slower than that. It is run again for
    the missing blocks' worth of time until there are enough, and the parts are merged.
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, label=label, timer=device_clock(device))
    parts = [timer.blocked_autorange(min_run_time=cfg.min_run_time)]
    while (missing := cfg.repeats - sum(len(part.times) for part in parts)) > 0:
        block_s = parts[-1].median * parts[-1].number_per_run
        parts.append(timer.blocked_autorange(min_run_time=missing * block_s))
    return benchmark.Measurement.merge(parts)[0]


def throughput(
    step: Callable[[], None], batch_size: int, device: torch.device = torch.device("cpu"), steps: int = TRAIN_STEPS
) -> float:
    """Images per second over `steps` calls after one warm-up, `device` synchronised."""
    clock = device_clock(device)
    step()
    start = clock()
    for _ in range(steps):
        step()
    return steps * batch_size / (clock() - start)
