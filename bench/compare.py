"""`python -m bench.compare RUN_DIR [RUN_DIR ...] --out DIR`: several run folders -> one report.

Seeds run on different machines or days, or a backbone added later, are merged into a new run
folder after checking that the runs are comparable: the same data, detector, schedule and
profile (the seeds and the measurement settings may differ) and the same use of pretrained
weights. Each backbone-seed may come from one folder only. Checkpoints are not copied; the
merged folder's `sources.json` says where everything came from.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import configure, logs, report
from .checks import fresh_dir
from .cli import ArgumentParser, entry_point
from .errors import UsageError
from .files import write_csv, write_json, write_text
from .report.load import load_config, metrics_row, result_dir, seeds_of

RESULT_FILES = ("metrics.json", "loss.csv", "detections.json", "evaluation.npz", "diverged.json")
# What may differ between merged runs: which seeds and backbones ran, where, and how cost was measured.
FREE = ("backbones", "profile.seeds", "profile.measure", "device", "cache_dir", "pretrained_dir", "audit", "seed")
log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def comparable_view(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that must agree, with pretrained weights reduced to whether there are any."""
    view = {key: value for key, value in config.items() if key not in FREE}
    view["profile"] = {key: value for key, value in config["profile"].items() if f"profile.{key}" not in FREE}
    view["pretrained"] = config.get("pretrained_dir") is not None
    return view


def check_comparable(configs: dict[Path, dict[str, Any]]) -> None:
    """UsageError naming the first setting in which a run differs from the first one."""
    (first_path, first), *others = configs.items()
    for path, config in others:
        changed = configure.first_difference(comparable_view(first), comparable_view(config))
        if changed:
            unrecorded = [p for p, c in ((first_path, first), (path, config)) if not configure.is_recorded(comparable_view(c), changed)]
            if unrecorded:
                raise UsageError(f"{path} is not comparable with {first_path}: {changed} is not recorded in "
                                 f"{unrecorded[0]}/config.yaml (written by an older detbench), so it cannot be shown "
                                 "to match; rerun that part with this version")
            mine, theirs = _lookup(comparable_view(first), changed), _lookup(comparable_view(config), changed)
            raise UsageError(f"{path} is not comparable with {first_path}: {changed} differs "
                             f"({theirs!r} vs {mine!r}); only seeds, backbones and measurement may differ")


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _owners(configs: dict[Path, dict[str, Any]]) -> dict[tuple[str, int], Path]:
    """Which folder each (backbone, seed) comes from; a pair in two folders is refused."""
    owners: dict[tuple[str, int], Path] = {}
    for path, config in configs.items():
        for seed in seeds_of(config):
            for name in config["backbones"]:
                if not (result_dir(path, config, name, seed) / "metrics.json").is_file():
                    continue
                if (name, seed) in owners:
                    raise UsageError(f"{name} with seed {seed} is in both {owners[(name, seed)]} and {path}; "
                                     "give each backbone-seed once")
                owners[(name, seed)] = path
    if not owners:
        raise UsageError("none of the folders has a finished backbone to compare")
    return owners


def merged_config(configs: dict[Path, dict[str, Any]], owners: dict[tuple[str, int], Path]) -> dict[str, Any]:
    first = dict(next(iter(configs.values())))
    first["backbones"] = list(dict.fromkeys(name for config in configs.values() for name in config["backbones"]
                                            if any(key[0] == name for key in owners)))
    first["profile"] = {**first["profile"], "seeds": sorted({seed for _, seed in owners})}
    first["audit"] = {name: entry for config in configs.values() for name, entry in (config.get("audit") or {}).items()
                      if name in first["backbones"]}
    first.pop("seed", None)  # a folder from before seeds existed
    return first


def _measurements(configs: dict[Path, dict[str, Any]], backbones: list[str], name: str) -> pd.DataFrame | None:
    """Each backbone's rows of `name` from the first folder that measured it."""
    frames, seen = [], set()
    for path in configs:
        if (path / name).is_file():
            frame = pd.read_csv(path / name)
            keep = frame[frame["backbone"].isin(set(backbones) - seen)]
            seen |= set(keep["backbone"])
            frames.append(keep)
    return pd.concat(frames, ignore_index=True) if frames else None


def merge(run_dirs: list[Path], out: Path) -> Path:
    """Check, copy results, write config.yaml, metrics.csv, measurements and sources.json, render."""
    configs = {path: load_config(path) for path in run_dirs}
    if len(set(map(Path.resolve, configs))) != len(configs):
        raise UsageError("a run folder is given twice")
    check_comparable(configs)
    owners = _owners(configs)
    config = merged_config(configs, owners)
    out = fresh_dir(out, "compare")
    logs.attach_run_log(out)
    rows = []
    for (name, seed), path in sorted(owners.items(), key=lambda item: (item[0][1], config["backbones"].index(item[0][0]))):
        source, target = result_dir(path, configs[path], name, seed), out / f"seed{seed}" / name
        target.mkdir(parents=True)
        for file in RESULT_FILES:
            if (source / file).is_file():
                shutil.copy2(source / file, target / file)
        rows.append({**metrics_row(json.loads((source / "metrics.json").read_text())), "source": str(path)})
    write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_csv(out / "metrics.csv", pd.DataFrame(rows))
    for name in ("measurements.csv", "flops_by_module.csv"):
        frame = _measurements(configs, config["backbones"], name)
        if frame is not None:
            write_csv(out / name, frame)
    first_env = next((path / "environment.json" for path in configs if (path / "environment.json").is_file()), None)
    if first_env is not None:
        shutil.copy2(first_env, out / "environment.json")
    write_json(out / "sources.json", [
        {"path": str(path), "backbones": sorted({n for (n, _), p in owners.items() if p == path}),
         "seeds": sorted({s for (_, s), p in owners.items() if p == path})}
        for path in configs
    ])
    return report.write_report(out)


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
