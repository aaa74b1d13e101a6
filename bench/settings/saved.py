"""A saved run folder back as settings: the one way every tool (report, compare, resume, evaluate --run) reads one.

Its config.yaml, of whatever version, becomes the typed `RunConfig`, and its version says which
layout the folder has; nothing is guessed from what the folder or the file happen to hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReportError
from ..layout import RunLayout
from .load import build_from, read_settings, to_dict
from .profiles import RunConfig
from .versions import VERSION_KEY, recorded, upgrade

SEEDED_SINCE = 2  # the version whose runs keep seed<k>/<backbone>/ folders


@dataclass(frozen=True)
class SavedRun:
    """A run folder's settings, its layout, and the config.yaml version it was written in."""

    config: RunConfig
    layout: RunLayout
    version: int

    def recorded(self, dotted: str) -> bool:
        """Whether config.yaml holds the setting, rather than `upgrade`'s stand-in for an older detbench's."""
        return recorded(self.version, dotted)

    def saved_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Settings saved beside this run in its own version (a checkpoint's) as the current `to_dict` gives them."""
        current = upgrade({**raw, VERSION_KEY: self.version})
        del current[VERSION_KEY]
        return to_dict(build_from(current))


def load_run_config(run_dir: Path) -> SavedRun:
    """The settings of the run in `run_dir`; ReportError when it has no config.yaml, ConfigError when that is wrong."""
    layout = RunLayout(Path(run_dir))
    if not layout.config.is_file():
        raise ReportError(f"{run_dir} is not a run folder (no config.yaml)")
    raw, version = read_settings(layout.config)
    config = build_from(raw, f"{layout.config}: ")
    return SavedRun(config, RunLayout(layout.root, seeded=version >= SEEDED_SINCE), version)
