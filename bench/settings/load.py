"""One way in for every setting: profile -> `--config` file -> command-line options -> `--set`.

OmegaConf structured configs do the merging and the type checks against the dataclasses of
`bench.settings.profiles` (an unknown key or a value of the wrong type is refused with its dotted name);
`validate` then checks the ranges in the fields' metadata. Every entry point that reads
settings (`bench.run`, `bench.measure`, `bench.compare`, `--resume`) comes through here, so a
mistake reads the same wherever it is made: one `error:` line naming the setting.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from .profiles import Profile, RunConfig, get_profile
from .versions import SCHEMA_VERSION, VERSION_KEY, upgrade, version_of


def one_line(err: Exception) -> str:
    """OmegaConf's messages span several lines (key, types...): keep the reason and the key."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "")
    reason = lines[0] if lines else type(err).__name__
    return f"{key}: {reason}" if key and key not in reason else reason


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, or a one-line ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(raw).__name__}")
    return raw


def read_settings(path: str | Path) -> tuple[dict[str, Any], int]:
    """A settings file (config.yaml) in the current format, without its version, and the version it was written in."""
    raw = read_yaml(path)
    if "data_dir" in raw:  # only bench.pretrain's config.yaml has it, and a bench.run one never did
        raise ConfigError(f"{path} is a bench.pretrain config.yaml, not a bench.run one")
    try:
        version = version_of(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    current = upgrade(raw)
    del current[VERSION_KEY]
    return current, version


def build(
    profile_name: str | None = None,
    file: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> RunConfig:
    """Merge, type-check and range-check: the profile's defaults, then a config file (of any version), then
    the command-line options (dotted names -> values), then `--set key=value` overrides."""
    raw = read_settings(file)[0] if file is not None else {}
    return build_from(raw, f"{file}: " if file is not None else "", profile_name, options, overrides)


def build_from(raw: dict[str, Any], source: str = "", profile_name: str | None = None,
          options: dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """`build` from settings already read (current format); `source` starts a mistake's message."""
    named = raw["profile"].get("name") if isinstance(raw.get("profile"), dict) else None
    base = RunConfig(profile=get_profile(profile_name or named or "default"))
    try:
        merged = OmegaConf.structured(base)
        if raw:
            merged = OmegaConf.merge(merged, raw)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}{one_line(err)}") from None
    try:
        for key, value in (options or {}).items():
            OmegaConf.update(merged, key, value, merge=False)
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(checked_overrides(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"--set {one_line(err)}" if overrides else one_line(err)) from None
    validate(cfg)
    return cfg


PROFILE_SECTIONS = tuple(f.name for f in dataclasses.fields(Profile) if f.name != "name")  # seeds too


def checked_overrides(overrides: Iterable[str], sections: Iterable[str] = PROFILE_SECTIONS,
                      example: str = "train.iterations=400") -> list[str]:
    """`section.key=value`: a profile setting (`train.iterations=400`, `seeds=[0,1]`, any of `sections`)
    or a run setting (`device=cpu`); a bare word or a missing `=` would otherwise be read as null."""
    sections = tuple(sections)
    dotlist = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. {example}")
        key = key.strip()
        if key.split(".")[0] in sections:
            key = f"profile.{key}"
        dotlist.append(f"{key}={value}")
    return dotlist


def validate(obj: Any, prefix: str = "") -> None:
    """Check every field's range rules (`bench.settings.profiles.rule`), recursively; ConfigError names the first."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, f"{name}.")
        elif isinstance(value, dict):
            for key, item in value.items():
                if dataclasses.is_dataclass(item):
                    validate(item, f"{name}.{key}.")
        elif "checks" in f.metadata:
            _check(name, value, f.metadata["checks"])
    if isinstance(obj, RunConfig):
        _check_run(obj)


def _check(name: str, value: Any, checks: dict[str, Any]) -> None:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if checks.get("nonempty") and not items:
        raise ConfigError(f"{name} must not be empty")
    if "length" in checks and len(items) != checks["length"]:
        raise ConfigError(f"{name} needs {checks['length']} values, got {len(items)}")
    for item in items:
        problem = _problem(item, checks)
        if problem:
            shown = f"{value!r}" if item is value else f"{list(value)!r}"
            raise ConfigError(f"{name} must be {problem}, got {shown}")


def _problem(value: Any, checks: dict[str, Any]) -> str | None:
    if "choices" in checks and value not in checks["choices"]:
        return f"one of {', '.join(map(str, checks['choices']))}"
    bounds = {"min": (">=", lambda v, b: v >= b), "above": (">", lambda v, b: v > b),
              "max": ("<=", lambda v, b: v <= b), "below": ("<", lambda v, b: v < b)}
    for key, (text, holds) in bounds.items():
        if key in checks and not holds(value, checks[key]):
            return f"{text} {checks[key]}"
    return None


def _check_run(cfg: RunConfig) -> None:
    """Rules that tie two settings together."""
    det, train = cfg.profile.detector, cfg.profile.train
    if det.min_size > det.max_size:
        raise ConfigError(f"profile.detector.min_size ({det.min_size}) must not exceed max_size ({det.max_size})")
    if list(train.lr_steps) != sorted(train.lr_steps):
        raise ConfigError(f"profile.train.lr_steps must increase, got {list(train.lr_steps)}")
    if len(set(cfg.profile.seeds)) != len(cfg.profile.seeds):
        raise ConfigError(f"profile.seeds must differ, got {cfg.profile.seeds}")
    if len(set(cfg.backbones)) != len(cfg.backbones):
        raise ConfigError(f"a backbone is listed twice: {', '.join(cfg.backbones)}")
    if not cfg.backbones:
        raise ConfigError("no backbone given")


def to_yaml(cfg: RunConfig) -> str:
    """config.yaml: its format version, then every setting in the dataclasses' order, tuples as lists."""
    return f"{VERSION_KEY}: {SCHEMA_VERSION}\n" + OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def comparable(cfg: RunConfig) -> dict[str, Any]:
    """The settings runs merged into one report must share: every one but those declared `MAY_DIFFER`."""
    values = to_dict(cfg)
    _drop_differing(cfg, values)
    return values


def _drop_differing(obj: Any, values: dict[str, Any]) -> None:
    for f in dataclasses.fields(obj):
        if f.metadata.get("may_differ"):
            del values[f.name]
        elif dataclasses.is_dataclass(getattr(obj, f.name)):
            _drop_differing(getattr(obj, f.name), values[f.name])


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted name of the first setting that differs between two config dicts, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return None if a == b else prefix.rstrip(".")
