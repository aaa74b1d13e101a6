"""Backbone names with constructor arguments: `resnet50[output_stride=16]`, `resnet50[init_seed=1]`.

A name is a timm model, optionally followed by keyword arguments in brackets, comma-separated,
each value a Python literal (`ast.literal_eval`). They go to `timm.create_model` as they are,
except `init_seed`, which is detbench's own: it changes only the seed the detector's initial
weights are drawn from (an A/A check: two copies of a backbone that differ only in init). The
name is kept as typed everywhere (config.yaml, folders, tables); the parsed form is what builds.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn

INIT_SEED = "init_seed"  # detbench's argument, never passed to timm
# The backbones the paper compares; any other timm model with multi-scale features works too.
SUPPORTED_BACKBONES = ("detnet59", "resnet50", "resnet101")
_NAME = re.compile(r"(?P<model>[^\[\],]+?)\s*(?:\[(?P<args>.*)\])?", re.DOTALL)
_TOP_LEVEL_COMMA = re.compile(r",(?![^\[]*\])")  # a comma outside any [...]


class BackboneError(ValueError):
    """A model that is not registered or cannot give the detector a feature pyramid; one line saying why."""


@dataclass(frozen=True)
class BackboneName:
    """A backbone name as typed, and what it means: the timm model, its arguments, the init seed."""

    text: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_seed: int | None = None

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What makes two names the same backbone, however they were spaced or ordered."""
        return self.model, repr(sorted(self.kwargs.items())), self.init_seed


def split_backbones(text: str) -> list[str]:
    """'detnet59, resnet50[output_stride=16,init_seed=1]' -> ['detnet59', 'resnet50[output_stride=16,init_seed=1]']."""
    return [item.strip() for item in _TOP_LEVEL_COMMA.split(text) if item.strip()]


def parse_backbone(text: str) -> BackboneName:
    """Split a name into model, timm arguments and init seed; a malformed one raises BackboneError."""
    found = _NAME.fullmatch(text.strip())
    if found is None:
        raise BackboneError(f"backbone {text!r}: write MODEL or MODEL[key=value,...], e.g. resnet50[output_stride=16]")
    kwargs = _arguments(text, found["args"] or "")
    init_seed = kwargs.pop(INIT_SEED, None)
    if init_seed is not None and (type(init_seed) is not int or init_seed < 0):
        raise BackboneError(f"backbone {text!r}: {INIT_SEED} must be a non-negative integer, got {init_seed!r}")
    return BackboneName(text, found["model"], kwargs, init_seed)


def _arguments(text: str, args: str) -> dict[str, Any]:
    """'output_stride=16, init_seed=1' -> {'output_stride': 16, 'init_seed': 1}, values as Python literals."""
    try:
        call = ast.parse(f"f({args})", mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise BackboneError(f"backbone {text!r}: write its arguments as key=value,... inside the brackets")
    values = {}
    for keyword in call.keywords:
        try:
            values[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError):
            raise BackboneError(f"backbone {text!r}: {keyword.arg}={ast.unparse(keyword.value)} is not a Python "
                                "literal (a number, a quoted string, True/False/None, a tuple or list of them)") from None
    return values


def parse_registered(name: str) -> BackboneName:
    """The parsed name of a model timm has registered; the one check of an unknown backbone."""
    parsed = parse_backbone(name)
    if not timm.is_model(parsed.model):
        raise BackboneError(
            f"unknown backbone {name!r}; the paper's are {', '.join(SUPPORTED_BACKBONES)}, "
            "and any timm model with 4 or 5 feature stages works, with arguments as MODEL[key=value,...]"
        )
    return parsed


def create_model(name: str | BackboneName, **extra: Any) -> nn.Module:
    """`timm.create_model` of a backbone name, its arguments included (`init_seed` is not timm's)."""
    parsed = name if isinstance(name, BackboneName) else parse_backbone(name)
    return timm.create_model(parsed.model, **parsed.kwargs, **extra)


def check_backbone(name: str) -> BackboneName:
    """The parsed name, once timm has built it on the meta device (no memory, no time): an argument the
    model does not have, or a value it refuses, raises BackboneError naming it."""
    parsed = parse_registered(name)
    try:
        with torch.device("meta"):
            create_model(parsed)
    except TypeError as err:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        what = f"has no argument {unknown[1]!r}" if unknown else f"refuses its arguments ({err})"
        raise BackboneError(f"backbone {name!r}: {parsed.model} {what}") from None
    except (ValueError, AssertionError, RuntimeError, NotImplementedError, KeyError) as err:
        given = ", ".join(f"{key}={value!r}" for key, value in parsed.kwargs.items())
        reason = f" ({str(err).strip().splitlines()[0]})" if str(err).strip() else ""
        raise BackboneError(f"backbone {name!r}: {parsed.model} refuses {given}{reason}") from None
    return parsed


def init_seed(name: str, seed: int) -> int:
    """The seed a backbone's detector is initialised from under training seed `seed`: the training seed
    itself, or with `init_seed=N` a seed drawn from (seed, N) by NumPy's SeedSequence, so every training
    seed still gives a different init and the data and batch order (which follow `seed`) stay the same."""
    extra = parse_backbone(name).init_seed
    if extra is None:
        return seed
    return int(np.random.SeedSequence([seed, extra]).generate_state(1, np.uint64)[0] >> 1)
