"""One way to get any registered timm model as a multi-scale feature extractor.

Every backbone comes out with the same interface, timm's feature extractor: `forward`
returns the feature maps of stages 2.. (stride 4 and up) and `feature_info` gives their
channels and strides, so the detector treats DetNet-59, ResNet or any timm model alike.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from timm.models import load_state_dict

from .detnet import checkpoint_filter_fn as detnet_filter_fn
from .names import BackboneError, create_model, parse_registered

# Key mappings for checkpoints in foreign layouts. torchvision's ResNet names are timm's own.
CHECKPOINT_FILTERS: dict[str, Callable[[dict, nn.Module], dict]] = {
    "detnet59": detnet_filter_fn, "detnet59_noproj": detnet_filter_fn,
}

MAX_DETECTION_LEVELS = 5  # P2-P6


class WeightsError(ValueError):
    """A weights file that cannot be loaded; the message is one line naming the file and the first bad key."""


def create_backbone(name: str, pretrained_file: str | Path | None = None, zero_init_last: bool = True) -> nn.Module:
    """Build `name` (random init, or weights from a local file) and return its stride >= 4 features.

    `name` may carry timm constructor arguments, `resnet50[output_stride=16]` (`backbones.names`).

    The result is timm's own feature extractor for the model (`features_only=True`), so any
    timm architecture works; weights are checked strictly against the full model first,
    because timm's feature-extractor loading tolerates missing keys. `zero_init_last=False` asks
    a residual model to start its blocks' last norm at 1 instead of timm's 0; it is passed only
    then, so models without that option build as they are by default.
    """
    parsed = parse_registered(name)
    init = {} if zero_init_last else {"zero_init_last": False}
    try:
        model = create_model(parsed, **init)
    except TypeError:
        if not init:
            raise
        raise BackboneError(f"backbone {name!r} has no zero_init_last option; leave detector.zero_init_last true") from None
    out_indices = pyramid_indices(name, model)
    overlay = {}
    if pretrained_file is not None:
        overlay["state_dict"] = read_weights_file(model, pretrained_file, CHECKPOINT_FILTERS.get(parsed.model))
    try:
        return create_model(
            parsed, features_only=True, out_indices=out_indices,
            pretrained=pretrained_file is not None, pretrained_cfg_overlay=overlay, **init,
        )
    except (RuntimeError, ValueError, TypeError, AttributeError, NotImplementedError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackboneError(f"backbone {name!r} cannot be a feature extractor in timm ({reason})") from None


def pyramid_indices(name: str, model: nn.Module) -> list[int]:
    """The stages that give the FPN its levels: strides 4, 8, 16 and then 16 or 32 (at most 5 levels).

    A model without such a pyramid (a ViT's single stride-16 map, a stem-only net) is refused with
    its strides, since the detector's P2-P5 could not be built from it.
    """
    reductions = [info["reduction"] for info in getattr(model, "feature_info", [])]
    out_indices = [i for i, r in enumerate(reductions) if r >= 4][:MAX_DETECTION_LEVELS]
    strides = [reductions[i] for i in out_indices]
    if len(strides) < 4 or strides[:3] != [4, 8, 16] or any(b < a for a, b in zip(strides, strides[1:])):
        raise BackboneError(
            f"backbone {name!r} has feature strides {reductions or 'unknown'}; the detector needs a pyramid of "
            "4 or 5 stages at strides 4, 8, 16, then 16 or 32 (ResNet-like or DetNet-like)"
        )
    return out_indices


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
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}  # DataParallel
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    state_dict = with_batch_counters(model, state_dict)
    problem = first_mismatch(model, state_dict)
    if problem:
        raise WeightsError(f"{path}: does not fit {type(model).__name__}: {problem}")
    return state_dict


def with_batch_counters(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints saved by PyTorch <= 0.3 have no BatchNorm `num_batches_tracked`: take the model's
    default (0), which only matters for BatchNorm with momentum=None."""
    counters = {key: value for key, value in model.state_dict().items()
                if key.endswith(".num_batches_tracked") and key not in state_dict}
    has_norm = any(key.removesuffix("num_batches_tracked") + "running_mean" in state_dict for key in counters)
    return {**state_dict, **counters} if has_norm else state_dict


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
