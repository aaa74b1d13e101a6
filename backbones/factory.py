"""One way to get any registered timm model as a multi-scale feature extractor.

Every backbone comes out with the same interface, timm's feature extractor: `forward`
returns the feature maps of stages 2.. (stride 4 and up) and `feature_info` gives their
channels and strides, so the detector treats DetNet-59, ResNet or any timm model alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn as nn
from timm.models import load_state_dict

from .detnet import checkpoint_filter_fn as detnet_filter_fn

# The backbones the paper compares; any other timm model with multi-scale features works too.
SUPPORTED_BACKBONES = ("detnet59", "resnet50", "resnet101")

# Key mappings for checkpoints in foreign layouts. torchvision's ResNet names are timm's own.
CHECKPOINT_FILTERS: dict[str, Callable[[dict, nn.Module], dict]] = {"detnet59": detnet_filter_fn}

MAX_DETECTION_LEVELS = 5  # P2-P6


class WeightsError(ValueError):
    """A weights file that cannot be loaded; the message is one line naming the file and the first bad key."""


def create_backbone(name: str, pretrained_file: str | Path | None = None) -> nn.Module:
    """Build `name` (random init, or weights from a local file) and return its stride >= 4 features.

    The result is timm's own feature extractor for the model (`features_only=True`), so any
    timm architecture works; weights are checked strictly against the full model first,
    because timm's feature-extractor loading tolerates missing keys.
    """
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}; registered detection backbones: {', '.join(SUPPORTED_BACKBONES)}")
    model = timm.create_model(name)
    reductions = [info["reduction"] for info in model.feature_info]
    out_indices = [i for i, r in enumerate(reductions) if r >= 4][:MAX_DETECTION_LEVELS]
    if len(out_indices) < 4:
        raise ValueError(f"backbone {name!r} has {len(out_indices)} feature stages at stride >= 4; FPN needs 4 or 5")
    overlay = {}
    if pretrained_file is not None:
        overlay["state_dict"] = read_weights_file(model, pretrained_file, CHECKPOINT_FILTERS.get(name))
    return timm.create_model(
        name, features_only=True, out_indices=out_indices,
        pretrained=pretrained_file is not None, pretrained_cfg_overlay=overlay,
    )


def load_weights_file(
    model: nn.Module,
    path: str | Path,
    filter_fn: Callable[[dict, nn.Module], dict] | None = None,
) -> None:
    """Load a local weights file into `model`, checked by `read_weights_file`."""
    model.load_state_dict(read_weights_file(model, path, filter_fn), strict=False)


def read_weights_file(
    model: nn.Module,
    path: str | Path,
    filter_fn: Callable[[dict, nn.Module], dict] | None = None,
) -> dict[str, torch.Tensor]:
    """Read a `.pth` (weights_only) or `.safetensors` state dict and check it fits `model`.

    Only the classifier may be absent (a headless checkpoint); every other key must be
    present with the right shape. Anything else raises `WeightsError` with one line.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        state_dict = load_state_dict(str(path))  # timm: safetensors, or torch.load(weights_only=True)
    except Exception as err:  # pickle, zip and safetensors errors differ; the reason is what matters
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a readable .pth/.safetensors state dict ({reason})") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    problem = first_mismatch(model, state_dict)
    if problem:
        raise WeightsError(f"{path}: does not fit {type(model).__name__}: {problem}")
    return state_dict


def first_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """Describe the first key that is missing, unexpected or of the wrong shape, if any."""
    expected = model.state_dict()
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "fc"
    optional = {f"{classifier}.weight", f"{classifier}.bias"}
    for key, tensor in expected.items():
        if key not in state_dict:
            if key not in optional:
                return f"missing key {key!r}"
        elif state_dict[key].shape != tensor.shape:
            return f"key {key!r} has shape {tuple(state_dict[key].shape)}, expected {tuple(tensor.shape)}"
    unexpected = [key for key in state_dict if key not in expected]
    return f"unexpected key {unexpected[0]!r}" if unexpected else None
