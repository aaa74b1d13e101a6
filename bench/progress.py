"""Progress for long work: a live bar on a terminal, a plain line now and then in a log file.

tqdm redraws its bar with carriage returns, which a non-TTY log (a cluster job's stdout, CI)
shows as one endless line; there, a line is logged every `LOG_INTERVAL_S` seconds and at the
end instead (stderr, and run.log). A live bar's redraws stay on the terminal: run.log gets
only its final line.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

from .logs import FILE_ONLY

LOG_INTERVAL_S = 30.0
log = logging.getLogger(__name__)


def progress_line(desc: str, n: int, total: int, postfix: str, elapsed: float) -> str:
    """'train resnet50: 40/200 (20%), loss=1.2, 0:41 elapsed'."""
    share = f" ({100 * n / total:.0f}%)" if total else ""
    extra = f", {postfix}" if postfix else ""
    seconds = int(elapsed)
    return f"{desc}: {n}/{total}{share}{extra}, {seconds // 60}:{seconds % 60:02d} elapsed"


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
        log.info("%s", progress_line(self.desc, self.n, self.total, self.postfix, self.last - self.start))

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoProgress(LineProgress):
    def _print(self) -> None:
        pass


class Bar(tqdm):
    """tqdm's live bar, whose final state run.log gets as one line."""

    def close(self) -> None:
        if not self.disable:  # tqdm disables a bar as it closes it: the line is logged once
            log.info("%s", progress_line(self.desc, self.n, self.total, self.postfix or "", self.format_dict["elapsed"]),
                     extra=FILE_ONLY)
        super().close()


def progress(total: int, desc: str, enabled: bool = True, initial: int = 0) -> Bar | LineProgress:
    """A bar on a terminal, periodic lines otherwise, nothing when not `enabled`."""
    if not enabled:
        return NoProgress(total, desc, initial)
    if sys.stderr.isatty():
        return Bar(total=total, desc=desc, initial=initial, dynamic_ncols=True)
    return LineProgress(total, desc, initial)
