"""The checks of what a user names (backbones, device, folders, how a batch splits), one place each.

Library code and every command line call these same functions, so a mistake reads the same
wherever it is caught: a `UsageError`, which the entry points turn into one `error:` line.
They live apart from `bench.cli` so that no library module needs the command-line code.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch

from backbones import BackboneError, check_backbone

from .errors import UsageError

DEVICE_DEFAULT = "cuda when there is one, else cpu"  # what default_device() picks, as every --help says it


def default_device() -> str:
    """The device every tool uses when none is given."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_backbones(names: Sequence[str]) -> None:
    """Every name a registered timm model whose arguments (`resnet50[output_stride=16]`) it takes, none twice."""
    if not names:
        raise UsageError("no backbone given")
    try:
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


def check_batch_split(batch_size: int, processes: int, option: str = "") -> None:
    """A batch shared out evenly over the processes that train it (torchrun's, or `option`'s value)."""
    if processes < 1 or batch_size % processes:
        given = f"{option} {processes}: " if option else ""
        raise UsageError(f"{given}batch size {batch_size} does not split over {processes} processes")


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


def check_new_dir(path: Path) -> None:
    """A folder that does not exist yet or is empty: earlier results are never overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} already exists and is not empty; earlier results are never overwritten")


def fresh_dir(path: str | Path | None, default_name: str) -> Path:
    """Create the output folder. A given one may exist only empty; a default name under
    results/ is created atomically, with a suffix if another run took it the same second."""
    if path is not None:
        folder = Path(path)
        check_new_dir(folder)
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
