"""What the command-line entry points share: their common options, and one error line for a user mistake.

Every `python -m bench.*` builds its parser from `ArgumentParser`, whose `add_*` methods give
the options tools have in common one spelling, one default and one help text, and wraps its
`main` in `entry_point`: the console is set up (`bench.logs`, `--log-level`), and a `UserError`
(bad option, config, data, run folder) or a weights file that does not fit becomes one `error:`
line on stderr and exit code 2, before anything long starts and without a traceback.
Only entry points import this module (tests/test_cli.py); library code checks through
`bench.checks`.
"""
from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

from backbones import BackboneError, WeightsError

from . import logs
from .checks import DEVICE_DEFAULT
from .errors import ExitStatus, UsageError, UserError

Main = Callable[[list[str] | None], int]
log = logging.getLogger(__name__)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a mistake as a UsageError (one line), with `--log-level` on every tool and
    the options tools share, added by name."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--log-level", type=str.upper, choices=logs.LEVELS, default="INFO",
                          help="the least severe lines shown (and written to a run folder's run.log): WARNING "
                               "keeps warnings and errors only (default INFO)")

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        logs.set_level(parsed.log_level)
        return parsed

    def add_backbones(self, default: str | None = None) -> None:
        """--backbones, required where there is no `default`."""
        self.add_argument("--backbones", required=default is None,
                          help=f"comma-separated timm model names, MODEL[key=value,...] for arguments "
                               f"({f'default {default}' if default else 'required'})")

    def add_device(self) -> None:
        self.add_argument("--device", help=f"cpu, cuda or cuda:N (default: {DEVICE_DEFAULT})")

    def add_profile(self, choices: Iterable[str], default: str, what: str = "schedule and sizes") -> None:
        self.add_argument("--profile", choices=sorted(choices), help=f"{what} (default {default})")

    def add_config(self) -> None:
        self.add_argument("--config", help="settings from a config.yaml (a run's, to repeat it), then the options "
                                           "given here")

    def add_set(self, example: str) -> None:
        self.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help=f"override any setting, e.g. {example} (repeatable)")

    def add_out(self, default: str | None = None, what: str = "new or empty folder") -> None:
        """--out, required where there is no `default`."""
        self.add_argument("--out", type=Path, required=default is None,
                          help=f"{what} ({f'default {default}' if default else 'required'})")

    def add_no_progress(self) -> None:
        self.add_argument("--no-progress", action="store_true", help="no progress bars or lines")


def entry_point(main: Main) -> Main:
    """Run `main` with the console set up, and turn the user mistakes it raises (bad options, settings,
    data, run folders, weights files, backbones without a pyramid) into one `error:` line and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        with logs.console():
            try:
                return main(argv)
            except (UserError, WeightsError, BackboneError) as err:
                log.error("error: %s", " ".join(str(err).split()))
                return ExitStatus.BAD_INPUT

    return wrapped


def split_list(text: str) -> list[str]:
    """'detnet59, resnet50' -> ['detnet59', 'resnet50']."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; a single number N -> the first N seeds, 0..N-1."""
    try:
        values = [int(item) for item in split_list(text)]
    except ValueError:
        raise UsageError(f"--seeds takes a count or a comma-separated list of integers, not {text!r}") from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise UsageError(f"--seeds {text}: give at least one seed")
        return list(range(values[0]))
    return values
