"""config.yaml's format versions, and `upgrade`: a file of any older version -> the current format.

A run folder is read by the detbench that reads it, not by the one that wrote it: its config.yaml
is upgraded here, one step per version, before it becomes a `RunConfig`, and its version decides
the folder's layout (`bench.layout`). Each step fills the settings the next version introduced
with what the older detbench did when it had no such setting, so an old run reads as what it ran.

1. One training seed (`seed: N` at the top), `train.amp` (fp16 autocast on CUDA only), one
   `<backbone>/` folder per backbone at the top of the run folder; no audit.
2. Seeds (`profile.seeds`, `seed<k>/<backbone>/` folders), `train.precision` for `amp`, channels-last,
   weight decay of norms and biases of its own, the fairness `audit`, `strict_data`.
3. `detector.rpn_batch_size_per_image` and `zero_init_last`, `train.compile_backbone`, `pin_memory`
   and `eval_every`, `measure.compile`.
4. `measure.cpu`, and the audit's `pretrain_*` provenance of a weights file.
5. `schema_version` itself, written first in config.yaml (the current version).

A file without `schema_version` was written before version 5: `seed` or `train.amp` make it a
version 1 file; otherwise one with an `audit` (bench.run writes one since version 2) is told by
the first setting it lacks. A file with neither is a settings file written by hand (`--config`),
merged over the profile as it is.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

SCHEMA_VERSION = 5
VERSION_KEY = "schema_version"
# The settings each version introduced: absent from an older file, filled in by the step to that version.
INTRODUCED: dict[int, tuple[str, ...]] = {
    2: ("profile.seeds", "profile.train.precision", "profile.train.channels_last",
        "profile.train.norm_bias_weight_decay", "audit", "strict_data"),
    3: ("profile.detector.rpn_batch_size_per_image", "profile.detector.zero_init_last",
        "profile.train.compile_backbone", "profile.train.pin_memory", "profile.train.eval_every",
        "profile.measure.compile"),
    4: ("profile.measure.cpu", "audit.*.pretrain_run", "audit.*.pretrain_data", "audit.*.pretrain_top1_err",
        "audit.*.pretrain_gmacs_224"),
    5: (),
}
PRETRAIN_PROVENANCE = ("pretrain_run", "pretrain_data", "pretrain_top1_err", "pretrain_gmacs_224")


def _fill(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted setting the file does not have (sections created as needed); one it has is kept."""
    *sections, key = dotted.split(".")
    for section in sections:
        raw = raw.setdefault(section, {})
    raw.setdefault(key, value)


def _from_1(raw: dict[str, Any]) -> None:
    """One `seed` -> `profile.seeds`; `amp` -> `precision` (amp meant fp16 autocast, on CUDA only); weight decay
    was applied to every parameter; nothing was audited."""
    seed = raw.pop("seed", 0)
    amp = raw.get("profile", {}).get("train", {}).pop("amp", False)
    train = raw.get("profile", {}).get("train", {})
    _fill(raw, "profile.seeds", [seed])
    _fill(raw, "profile.train.precision", "fp16" if amp and str(raw.get("device", "")).startswith("cuda") else "fp32")
    _fill(raw, "profile.train.channels_last", False)
    _fill(raw, "profile.train.norm_bias_weight_decay", train.get("weight_decay", 1e-4))
    _fill(raw, "audit", {})
    _fill(raw, "strict_data", False)


def _from_2(raw: dict[str, Any]) -> None:
    """torchvision's 256 RPN anchors; timm's identity-start blocks; eager backbones, pageable batches, no
    evaluation during training, eager measurement."""
    _fill(raw, "profile.detector.rpn_batch_size_per_image", 256)
    _fill(raw, "profile.detector.zero_init_last", True)
    _fill(raw, "profile.train.compile_backbone", False)
    _fill(raw, "profile.train.pin_memory", False)
    _fill(raw, "profile.train.eval_every", 0)
    _fill(raw, "profile.measure.compile", [False])


def _from_3(raw: dict[str, Any]) -> None:
    """The CPU was always timed too; no weights file came with its pretraining run's record."""
    _fill(raw, "profile.measure.cpu", True)
    for entry in (raw.get("audit") or {}).values():
        for key in PRETRAIN_PROVENANCE:
            entry.setdefault(key, None)


def _from_4(raw: dict[str, Any]) -> None:
    """Version 5 only writes its number."""


STEPS: dict[int, Callable[[dict[str, Any]], None]] = {1: _from_1, 2: _from_2, 3: _from_3, 4: _from_4}


def _has(raw: dict[str, Any], dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(raw, dict) or key not in raw:
            return False
        raw = raw[key]
    return True


def checked_version(version: Any, newest: int) -> int:
    """A file's `schema_version`, refused in one line unless it is one this detbench reads (1 to `newest`)."""
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= newest:
        raise ConfigError(f"{VERSION_KEY} {version!r} is not one this detbench reads (1 to {newest}); "
                          "a newer detbench wrote it")
    return version


def version_of(raw: dict[str, Any]) -> int:
    """The format version of a config.yaml's contents (see the module's docstring for files without one)."""
    if VERSION_KEY in raw:
        return checked_version(raw[VERSION_KEY], SCHEMA_VERSION)
    if "seed" in raw or _has(raw, "profile.train.amp"):
        return 1
    if "audit" not in raw:
        return SCHEMA_VERSION
    for version in (3, 4):
        if any(not _has(raw, name) for name in INTRODUCED[version] if "*" not in name):
            return version - 1
    return 4


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of config.yaml's contents in the current format, `schema_version` included."""
    upgraded = copy.deepcopy(raw)
    for version in range(version_of(raw), SCHEMA_VERSION):
        STEPS[version](upgraded)
    upgraded[VERSION_KEY] = SCHEMA_VERSION
    return upgraded


def recorded(version: int, dotted: str) -> bool:
    """Whether a file of `version` recorded the setting, rather than had it filled in by `upgrade`."""
    return not any(dotted in INTRODUCED[later] for later in range(version + 1, SCHEMA_VERSION + 1))
