"""What a command tells its user, through the `bench` logger: the console as it always looked, and run.log.

Every module logs to `logging.getLogger(__name__)` (a command module to `__spec__.name`, its name
under `python -m` too). On the console a record is its text alone:
information on stdout; warnings, errors and progress lines on stderr, where tqdm draws its
bars. A command that owns a run folder also writes `run.log` there: the same lines with a
timestamp, from the command's start (what came before the folder existed is kept until it
does), appended on `--resume`. A live bar's redraws never reach the file, only its final line.
Under torchrun only rank 0 shows information and writes run.log; every rank still shows its
warnings and errors, since a failure may be seen by one rank alone.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .comm import launched_rank
from .layout import PretrainLayout, RunLayout

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FILE_ONLY = {"file_only": True}  # `extra` of a record the console already showed another way (a tqdm bar)
PROGRESS_LOGGER = "bench.progress"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_root = logging.getLogger("bench")


class _StdStream(logging.StreamHandler):
    """A handler writing to sys.stdout or sys.stderr as they are at each record (pytest swaps them)."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self.stream_name = stream_name

    @property
    def stream(self):
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value) -> None:
        pass  # StreamHandler.__init__ sets one; the current sys stream is always used


def _to_stderr(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name == PROGRESS_LOGGER


class _FileFormatter(logging.Formatter):
    """'2026-12-04 17:02:11 <the console's text>', blank lines around a message (spacing on a console) dropped."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().strip("\n")
        return f"{self.formatTime(record, TIME_FORMAT)} {text}"


class _RunLog(logging.FileHandler):
    """run.log; a line it cannot write (a full disk) is left out quietly: the console showed it, and logging's
    own report would be a traceback beside the one `error:` line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _Buffer(logging.Handler):
    """The records of a command until its run folder exists and run.log can take them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def console(level: str = "INFO") -> Iterator[None]:
    """The console and run.log's buffer for one command; everything is taken down after it."""
    handlers: list[logging.Handler] = []
    for name, wanted in (("stdout", False), ("stderr", True)):
        handler = _StdStream(name)
        handler.addFilter(lambda record, wanted=wanted: _to_stderr(record) == wanted
                          and not getattr(record, "file_only", False))
        handlers.append(handler)
    if launched_rank() == 0:
        handlers.append(_Buffer())
    saved = _root.level, _root.propagate
    _root.propagate = False  # the console shows each line once, whatever else configured logging
    for handler in handlers:
        _root.addHandler(handler)
    set_level(level)
    try:
        yield
    finally:
        for handler in _root.handlers[:]:
            if handler in handlers or isinstance(handler, _RunLog):
                _root.removeHandler(handler)
                handler.close()
        _root.setLevel(saved[0])
        _root.propagate = saved[1]


def set_level(level: str) -> None:
    """--log-level: the least severe record shown and logged (INFO by default; other ranks show WARNING up)."""
    _root.setLevel(level)
    for handler in _root.handlers:
        if isinstance(handler, _StdStream) and launched_rank() != 0:
            handler.setLevel(max(logging.WARNING, _root.level))


def attach_run_log(layout: RunLayout | PretrainLayout) -> None:
    """From now on, write this command's lines into the folder's run.log (appended), beginning with those so far."""
    buffers = [handler for handler in _root.handlers if isinstance(handler, _Buffer)]
    if not buffers:  # not rank 0, or not within `console`
        return
    run_log = _RunLog(layout.run_log, mode="a", encoding="utf-8")
    run_log.setFormatter(_FileFormatter())
    for record in buffers[0].records:
        run_log.handle(record)
    _root.removeHandler(buffers[0])
    _root.addHandler(run_log)
