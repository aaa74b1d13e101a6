"""Every file a run writes goes through here: whole or not at all, even if the machine dies mid-write.

A write goes to a temporary file in the same folder, is flushed to disk (fsync) and renamed
over the target, which POSIX makes atomic: a reader, or a run resumed after a crash, sees
the old file or the new one, never half of one. A write that finds no space keeps the old
file and raises `DiskFull`, which names the file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd

from .errors import UsageError

# No space left, a quota, or a file-size limit (RLIMIT_FSIZE): to the user, all a full disk.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFull(OSError):
    """A write found no space; `filename` is the file it was writing, which still holds its old content."""


def _no_space(err: BaseException | None) -> OSError | None:
    """The no-space OSError behind `err`, if any: torch.save reports one as a RuntimeError."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(file)` on a temporary file, then move it over `path` once it is on disk."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        full = _no_space(err)
        if full is not None:
            raise DiskFull(full.errno, full.strerror, str(path)) from err
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda file: file.write(data))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, value: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(value, indent=indent) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file's value; a file that is missing, unreadable or not JSON is the user's mistake (`UsageError`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False))


def sha256(path: str | Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB blocks (weights files are large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def set_status(path: Path, state: str, reason: str | None = None, **details: Any) -> None:
    """A run's status.json at `path`: `running`, `finished`, `interrupted` or `failed` (with the reason), and when."""
    record = {"state": state, "reason": reason, **details,
              "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(path, record)


def publish_dir(tmp: Path, root: Path, complete: str) -> None:
    """Move the fully written folder `tmp` into place as `root`, whose file `complete` marks it whole:
    a half-written `root` of an interrupted run is replaced; one another process finished first wins."""
    if root.exists() and not (root / complete).is_file():
        shutil.rmtree(root)
    try:
        tmp.rename(root)
    except OSError:
        if not (root / complete).is_file():
            raise
