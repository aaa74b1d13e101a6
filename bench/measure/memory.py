"""How much memory a call needs: CUDA allocator statistics on a GPU, the resident set on the CPU.

Memory that earlier calls freed is handed back first (`release_free_memory`), so that a call
which needs it again shows it as growth rather than reusing a cache.
"""
from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Callable
from typing import Any

import psutil
import torch

MIB = 2**20
RSS_INTERVAL_S = 1e-3


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
    """Peak memory of one call above what was allocated before it: CUDA allocator statistics on a GPU
    (with that base beside it), the resident set's rise on the CPU. Relative, so that what earlier
    measurements left allocated does not count (rows do not depend on the order of backbones)."""
    release_free_memory(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return {
            "base_mem_mb": base / MIB,
            "peak_mem_mb": (torch.cuda.max_memory_allocated(device) - base) / MIB,
            "reserved_mem_mb": (torch.cuda.max_memory_reserved(device) - reserved) / MIB,
        }
    with RSSPeak() as rss:
        fn()
    return {"rss_peak_mb": rss.increase_mb}
