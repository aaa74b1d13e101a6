"""What the command-line entry points share: the user-mistake error and the checks behind it.

A `UsageError` is printed as one `error:` line with exit code 2 by every `python -m bench.*`.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import timm
import torch

from backbones import SUPPORTED_BACKBONES


class UsageError(ValueError):
    """A mistake in the command line or the files it names."""


def parse_backbones(text: str) -> list[str]:
    """'detnet59, resnet50' -> ['detnet59', 'resnet50'], each a registered timm model, none twice."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    check_backbones(names)
    return names


def check_backbones(names: Sequence[str]) -> None:
    if not names:
        raise UsageError("no backbone given")
    unknown = [name for name in names if not timm.is_model(name)]
    if unknown:
        raise UsageError(
            f"unknown backbone {unknown[0]!r}; the paper's are {', '.join(SUPPORTED_BACKBONES)}, "
            "and any timm model with 4 or 5 feature stages works"
        )
    if len(set(names)) != len(names):
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


def fresh_dir(path: str | Path | None, default_name: str) -> Path:
    """Create the output folder. A given one may exist only empty; a default name under
    results/ is created atomically, with a suffix if another run took it the same second."""
    if path is not None:
        folder = Path(path)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"{folder} already exists and is not empty; earlier results are never overwritten")
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    stem = Path("results") / f"{datetime.now():%Y%m%d-%H%M%S}-{default_name}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        folder = stem.with_name(f"{stem.name}-{attempt}") if attempt else stem
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UsageError(f"could not create a new folder next to {stem}")
