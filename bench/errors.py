"""The mistakes a user can make, as exceptions every `python -m bench.*` turns into one `error:` line,
and the exit statuses that tell them from the failures a long run can meet.

They live in a module of their own so that any part of the pipeline can raise them without
importing the command-line code.
"""
from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """What `python -m bench.*` exits with, so that a script or scheduler can tell failures apart
    (README, "Long runs that survive"); every status but 0 comes with one `error:` line."""

    OK = 0
    BAD_INPUT = 2  # a UserError: nothing long started, nothing written
    DIVERGED = 3  # a backbone or seed diverged; everything else was written, status.json lists it
    OUT_OF_MEMORY = 4  # CUDA out of memory in a training step; the last checkpoint is kept
    DISK_FULL = 5  # a write found no space (full disk, quota, file-size limit); earlier files are intact
    RANK_LOST = 75  # another process of the torchrun job died (EX_TEMPFAIL: `--resume` goes on)
    INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it); a checkpoint was saved


class UserError(ValueError):
    """Something the user can fix: the message is one line that says what and where."""


class UsageError(UserError):
    """A mistake in the command line or the files it names."""


class ConfigError(UserError):
    """A setting that does not exist, has the wrong type, or is out of range."""


class DataError(UserError):
    """The data named on the command line is missing or is not usable COCO detection data."""


class ReportError(UserError):
    """A folder that is not a run folder, or a run file that cannot be read."""
