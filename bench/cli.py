"""What the command-line entry points share: one error line for a user mistake, and the checks behind it.

Every `python -m bench.*` wraps its `main` in `entry_point`: a `UserError` (bad option, config,
data, run folder) or a weights file that does not fit becomes one `error:` line on stderr and
exit code 2, before anything long starts and without a traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import timm
import torch

from backbones import SUPPORTED_BACKBONES, BackboneError, WeightsError, check_backbone, parse_backbone

from .errors import ExitStatus, UsageError, UserError

Main = Callable[[list[str] | None], int]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a mistake as a UsageError (one line) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def entry_point(main: Main) -> Main:
    """Turn the user mistakes `main` raises (bad options, settings, data, run folders, weights files,
    backbones without a pyramid) into one `error:` line and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except (UserError, WeightsError, BackboneError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
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


def check_backbones(names: Sequence[str]) -> None:
    """Every name a registered timm model whose arguments (`resnet50[output_stride=16]`) it takes, none twice."""
    if not names:
        raise UsageError("no backbone given")
    try:
        unknown = [name for name in names if not timm.is_model(parse_backbone(name).model)]
        if unknown:
            raise UsageError(
                f"unknown backbone {unknown[0]!r}; the paper's are {', '.join(SUPPORTED_BACKBONES)}, "
                "and any timm model with 4 or 5 feature stages works, with arguments as MODEL[key=value,...]"
            )
        keys = [check_backbone(name).key for name in names]
    except BackboneError as err:
        raise UsageError(str(err)) from None
    if len(set(keys)) != len(keys):
        raise UsageError("a backbone is listed twice")


def check_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' that this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device must be cpu or cuda, not {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but this machine has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_writable_dir(path: Path, what: str) -> None:
    """A folder that exists or can be created, and can be written: not under a file, not read-only.

    Writing a probe file is the only test that holds for root and for read-only mounts alike.
    """
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{what} {path}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise UsageError(f"{what} {path}: cannot write in {existing} ({err.strerror or err})") from None


def fresh_dir(path: str | Path | None, default_name: str) -> Path:
    """Create the output folder. A given one may exist only empty; a default name under
    results/ is created atomically, with a suffix if another run took it the same second."""
    if path is not None:
        folder = Path(path)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"{folder} already exists and is not empty; earlier results are never overwritten")
        check_writable_dir(folder, "--out")
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    stem = Path("results") / f"{datetime.now():%Y%m%d-%H%M%S}-{default_name}"
    check_writable_dir(stem.parent, "results folder")
    stem.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        folder = stem.with_name(f"{stem.name}-{attempt}") if attempt else stem
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UsageError(f"could not create a new folder next to {stem}")
