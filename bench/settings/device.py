"""Settings resolved for the device a tool runs on, before any work starts.

What `auto` means on this device is decided once, and what the device cannot do is refused with
one `error:` line, instead of a traceback minutes into a run. The rules are the ones training and
measurement apply (`bench.train.resolve_precision`, `bench.measure.precision.unsupported`). Kept
out of the package's `__init__` because it needs torch and bench.train, which import the settings.
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import ConfigError
from ..measure.precision import unsupported
from ..train import resolve_precision
from .profiles import RunConfig

AUTOCAST_NAMES = {"bf16": "bfloat16"}  # train.precision -> the dtype name measure.precision knows


def resolve(cfg: RunConfig, device: torch.device) -> RunConfig:
    """A copy of `cfg` with `train.precision` resolved for `device`; ConfigError if the device cannot run it."""
    try:
        precision = resolve_precision(cfg.profile.train.precision, device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    reason = unsupported(device, AUTOCAST_NAMES[precision]) if precision in AUTOCAST_NAMES else None
    if reason is not None:
        raise ConfigError(f"train.precision {precision}: {reason.removeprefix('not measured: ')}; use fp32")
    train = dataclasses.replace(cfg.profile.train, precision=precision)
    return dataclasses.replace(cfg, profile=dataclasses.replace(cfg.profile, train=train))
