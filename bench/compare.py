"""`python -m bench.compare RUN_DIR [RUN_DIR ...] --out DIR`: several run folders -> one report.

Seeds run on different machines or days, or a backbone added later, are merged into a new run
folder after checking that the runs are comparable: the same data, detector, schedule and
profile (the seeds and the measurement settings may differ) and the same use of pretrained
weights. Each backbone-seed may come from one folder only. Checkpoints are not copied; the
merged folder's `sources.json` says where everything came from.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from . import logs, report, settings
from .checks import fresh_dir
from .cli import ArgumentParser, entry_point
from .errors import UsageError
from .files import write_csv, write_json, write_text
from .layout import RunLayout
from .report.load import metrics_row
from .settings import RunConfig, SavedRun

log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def comparable_view(cfg: RunConfig) -> dict[str, Any]:
    """The settings that must agree (all but those declared `MAY_DIFFER`), with pretrained weights reduced to
    whether there are any."""
    return {**settings.comparable(cfg), "pretrained": cfg.pretrained}


def check_comparable(runs: dict[Path, SavedRun]) -> None:
    """UsageError naming the first setting in which a run differs from the first one."""
    (first_path, first), *others = runs.items()
    for path, run in others:
        mine, theirs = comparable_view(first.config), comparable_view(run.config)
        changed = settings.first_difference(mine, theirs)
        if changed:
            raise UsageError(f"{path} is not comparable with {first_path}: {changed} differs "
                             f"({_lookup(theirs, changed)!r} vs {_lookup(mine, changed)!r}); only seeds, backbones "
                             "and measurement may differ")


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _owners(runs: dict[Path, SavedRun]) -> dict[tuple[str, int], Path]:
    """Which folder each (backbone, seed) comes from; a pair in two folders is refused."""
    owners: dict[tuple[str, int], Path] = {}
    for path, run in runs.items():
        for seed in run.config.profile.seeds:
            for name in run.config.backbones:
                if not run.layout.result(name, seed).metrics.is_file():
                    continue
                if (name, seed) in owners:
                    raise UsageError(f"{name} with seed {seed} is in both {owners[(name, seed)]} and {path}; "
                                     "give each backbone-seed once")
                owners[(name, seed)] = path
    if not owners:
        raise UsageError("none of the folders has a finished backbone to compare")
    return owners


def merged_config(runs: dict[Path, SavedRun], owners: dict[tuple[str, int], Path]) -> RunConfig:
    """The first run's settings with every merged backbone, seed and audit entry."""
    first = next(iter(runs.values())).config
    backbones = list(dict.fromkeys(name for run in runs.values() for name in run.config.backbones
                                   if any(key[0] == name for key in owners)))
    audit = {name: entry for run in runs.values() for name, entry in run.config.audit.items() if name in backbones}
    profile = dataclasses.replace(first.profile, seeds=sorted({seed for _, seed in owners}))
    return dataclasses.replace(first, backbones=backbones, profile=profile, audit=audit)


def _measurements(files: list[Path], backbones: list[str]) -> pd.DataFrame | None:
    """Each backbone's rows (costs, receptive fields) from the first of `files` (one table, of each run) that
    measured it."""
    frames, seen = [], set()
    for path in files:
        if path.is_file():
            frame = pd.read_csv(path)
            keep = frame[frame["backbone"].isin(set(backbones) - seen)]
            seen |= set(keep["backbone"])
            frames.append(keep)
    return pd.concat(frames, ignore_index=True) if frames else None


def merge(run_dirs: list[Path], out: Path) -> Path:
    """Check, copy results, write config.yaml, metrics.csv, measurements and sources.json, render."""
    runs = {path: settings.load_run_config(path) for path in run_dirs}
    if len(set(map(Path.resolve, runs))) != len(runs):
        raise UsageError("a run folder is given twice")
    check_comparable(runs)
    owners = _owners(runs)
    config = merged_config(runs, owners)
    layout = RunLayout(fresh_dir(out, "compare"))
    logs.attach_run_log(layout)
    rows = []
    for (name, seed), path in sorted(owners.items(), key=lambda item: (item[0][1], config.backbones.index(item[0][0]))):
        source, target = runs[path].layout.result(name, seed), layout.result(name, seed)
        target.folder.mkdir(parents=True)
        for kept, copy in zip(source.kept(), target.kept(), strict=True):
            if kept.is_file():
                shutil.copy2(kept, copy)
        rows.append({**metrics_row(json.loads(source.metrics.read_text()), seed), "source": str(path)})
    write_text(layout.config, settings.to_yaml(config))
    write_csv(layout.metrics, pd.DataFrame(rows))
    sources = [run.layout for run in runs.values()]
    for table in (lambda run: run.measurements, lambda run: run.flops_by_module, lambda run: run.receptive_field):
        frame = _measurements([table(run) for run in sources], config.backbones)
        if frame is not None:
            write_csv(table(layout), frame)
    first_env = next((run.environment for run in sources if run.environment.is_file()), None)
    if first_env is not None:
        shutil.copy2(first_env, layout.environment)
    write_json(layout.sources, [
        {"path": str(path), "backbones": sorted({n for (n, _), p in owners.items() if p == path}),
         "seeds": sorted({s for (_, s), p in owners.items() if p == path})}
        for path in runs
    ])
    return report.write_report(layout.root)


def _parse_args(argv: list[str] | None):
    parser = ArgumentParser(prog="python -m bench.compare",
                            description="Merge comparable run folders (other seeds, more backbones) into one report.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders written by bench.run")
    parser.add_out(what="new or empty folder for the merged run")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    log.info("%s", merge(args.runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
