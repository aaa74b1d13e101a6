"""The mistakes a user can make, as exceptions every `python -m bench.*` turns into one `error:` line.

They live in a module of their own so that any part of the pipeline can raise them without
importing the command-line code.
"""
from __future__ import annotations


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


# Exit status of a process of a torchrun job that lost another one (EX_TEMPFAIL: `--resume` goes on).
RANK_LOST = 75
