"""Progress for long work: a live bar on a terminal, a plain line now and then in a log file.

tqdm redraws its bar with carriage returns, which a non-TTY log (a cluster job's stdout, CI)
shows as one endless line; there, a dated line is printed every `LOG_INTERVAL_S` seconds and
at the end instead.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class LineProgress:
    """tqdm's `update`/`set_postfix`/`close` for logs: 'train resnet50: 40/200 (20%), loss=1.2, 0:41 elapsed'."""

    def __init__(self, total: int, desc: str, initial: int = 0, interval: float = LOG_INTERVAL_S) -> None:
        self.total, self.desc, self.n, self.interval = total, desc, initial, interval
        self.start = self.last = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._print()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        self._print()

    def _print(self) -> None:
        self.last = time.monotonic()
        elapsed = int(self.last - self.start)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total}{share}{extra}, {elapsed // 60}:{elapsed % 60:02d} elapsed",
              file=sys.stderr, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoProgress(LineProgress):
    def _print(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool = True, initial: int = 0) -> tqdm | LineProgress:
    """A bar on a terminal, periodic lines otherwise, nothing when not `enabled`."""
    if not enabled:
        return NoProgress(total, desc, initial)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True)
    return LineProgress(total, desc, initial)
