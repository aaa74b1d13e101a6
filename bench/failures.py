"""How a run ends when an event, not an input, stops it: the one line the user reads and the exit status.

A full disk, CUDA running out of memory, a backbone that diverged: each gets a documented exit
status (bench.errors.ExitStatus) and a line saying what happened, what is kept and what to do.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ExitStatus
from .files import DiskFull
from .layout import RunLayout
from .settings import RunConfig


class RunFailed(RuntimeError):
    """An event stopped the run; the message is its one line, `status` the exit status."""

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


def out_of_memory(err: BaseException, cfg: RunConfig, world: int, run_dir: Path, checkpoint_path: Path) -> RunFailed:
    """What ran out of memory (backbone, seed, batch, input size, precision), what is kept, and the smaller batch."""
    settings, sizes = cfg.profile.train, cfg.profile.detector
    per_process = settings.batch_size // world
    kept = f"the last checkpoint {checkpoint_path} is kept" if checkpoint_path.is_file() else "no checkpoint was due"
    if per_process > 1:
        advice = f"--set train.batch_size={world * (per_process // 2)}"
    else:
        advice = f"--set detector.min_size={sizes.min_size // 2} --set detector.max_size={sizes.max_size // 2}"
    return RunFailed(f"{err} with a batch of {settings.batch_size} ({per_process} per GPU) at input size "
                     f"{sizes.min_size}-{sizes.max_size} px in {settings.precision}; {kept}; `python -m bench.run "
                     f"--resume {run_dir}` retries as it was, a new run with `--config {RunLayout(run_dir).config} "
                     f"{advice}` needs less memory", ExitStatus.OUT_OF_MEMORY)


def stopped_by(err: BaseException, resume_hint: str) -> RunFailed | None:
    """The run's end for an event with an exit status of its own; None for anything else (a bug: traceback)."""
    if isinstance(err, RunFailed):
        return err
    if isinstance(err, DiskFull):
        return RunFailed(f"no space left writing {err.filename} ({err.strerror}); it and every earlier file are "
                         f"intact: free space, then `{resume_hint}`", ExitStatus.DISK_FULL)
    return None


def diverged(names: list[str], run_dir: Path) -> str:
    """The line for a run that finished but whose backbones or seeds in `names` diverged."""
    return (f"{len(names)} training(s) diverged ({', '.join(names)}): see diverged.json in their folders; every "
            f"other result and the report are in {run_dir}")
