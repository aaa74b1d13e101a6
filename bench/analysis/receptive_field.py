"""Resolution and receptive field of each backbone stage the FPN uses, measured, not derived.

DetNet's claim is that stride 16 in the deep stages keeps resolution while dilation keeps the
receptive field (RF) large. Both are measured here on any feature extractor built by
`backbones.create_backbone` (a model whose `forward(x)` returns the list of stage maps):

* `theoretical_rf`: the side of the input square the centre unit of each stage can see. The
  model is turned into a positive linear network (constant positive conv weights, BatchNorm
  and other norms as identity, max-pool as average pool, activations as identity), so no
  gradient can cancel or be blocked; the non-zero support of the centre unit's input gradient
  is then exactly its RF. Found by module type, so it works for any conv backbone.
* `effective_rf`: the effective RF of Luo et al. (NeurIPS 2016): |d centre / d input| of the
  real model (eval mode), summed over input channels and averaged over images; reported as
  the radii holding 50% and 90% of that gradient mass.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

__all__ = ["ReceptiveFieldError", "effective_rf", "erf_maps", "receptive_field_rows", "theoretical_rf", "unit_offsets"]

# Parameter-free activation modules; all keep gradients non-negative on positive inputs, but
# ReLU6/Hardsigmoid saturate and Sigmoid/Tanh underflow, so all become identity.
_ACTIVATION_MODULES = ("torch.nn.modules.activation", "timm.layers.activations", "timm.layers.activations_me")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_ALIGN = 64  # the probe's size is the image's plus a multiple of this (>= any stride), see `unit_offsets`


class ReceptiveFieldError(ValueError):
    """The RF reaches the input border (it is at least the input: pass a larger size), or the
    model has a layer that cannot be made positive and linear (e.g. weight-standardised conv)."""


def _average_channels(module: nn.Module, args: tuple) -> tuple:
    return (args[0].mean(dim=1, keepdim=True),) + tuple(args[1:])


def positive_network(model: nn.Module, collapse_channels: bool = True) -> nn.Module:
    """A deep copy of `model` as a positive linear network with the same spatial dependencies.

    Convs get weights 1/fan_in and no bias; norms are identity (BatchNorm with affine parameters
    and running stats reset is identity up to eps; it is replaced outright), max-pool becomes an
    average pool with the same geometry, activations become identity. With `collapse_channels`
    every conv first averages its input channels and has one output channel: the support of a
    positive network does not depend on its widths, and one channel is ~1000x cheaper.
    """
    net = copy.deepcopy(model).eval()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _NORMS) or (
                type(child).__module__ in _ACTIVATION_MODULES and not isinstance(child, nn.MultiheadAttention)
            ):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, MaxPool2dSame):
                setattr(parent, name, AvgPool2dSame(child.kernel_size, child.stride, 0, child.ceil_mode))
            elif isinstance(child, nn.MaxPool2d):
                if child.dilation not in (1, (1, 1)):
                    raise ReceptiveFieldError(f"{name}: dilated max-pool has no average-pool equivalent")
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, name, nn.AdaptiveAvgPool2d(child.output_size))
    for conv in net.modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        kh, kw = conv.kernel_size
        if collapse_channels:
            conv.register_forward_pre_hook(_average_channels)
            conv.in_channels = conv.out_channels = conv.groups = 1
            conv.weight = nn.Parameter(torch.full((1, 1, kh, kw), 1.0 / (kh * kw)))
        else:
            conv.weight = nn.Parameter(torch.full_like(conv.weight, 1.0 / conv.weight[0].numel()))
        conv.bias = None
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _strides(model: nn.Module, map_hw: Sequence[tuple[int, int]], height: int) -> list[int]:
    """Stride per stage: timm's `feature_info.reduction()`, else input height / map height."""
    info = getattr(model, "feature_info", None)
    return list(info.reduction()) if hasattr(info, "reduction") else [round(height / h) for h, _ in map_hw]


def _centre_grads(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """Input gradient of each stage's centre unit (all channels, output grad 1 at (h//2, w//2)).

    One forward, then one backward per stage through the retained graph; per image of the batch.
    """
    x = x.detach().clone().requires_grad_(True)
    outs = list(model(x))
    grads = []
    for i, out in enumerate(outs):
        h, w = out.shape[-2:]
        seed = torch.zeros_like(out)
        seed[..., h // 2, w // 2] = 1.0
        (grad,) = torch.autograd.grad(out, x, seed, retain_graph=i < len(outs) - 1)
        grads.append((grad, (h, w)))
    return grads


def _probe(model: nn.Module, height: int, width: int, collapse_channels: bool = True) -> list[dict]:
    """Per stage of a positive copy at height x width: RF side, stride and the offset (oy, ox) of the
    centre unit's RF centre from s * (h//2, w//2); `ReceptiveFieldError` if the input clips an RF."""
    net = positive_network(model, collapse_channels)
    dtype = torch.float64 if collapse_channels else torch.float32  # float64: (1/9)^depth must not underflow
    in_chans = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    try:
        grads = _centre_grads(net.to(dtype), torch.ones(1, in_chans, height, width, dtype=dtype))
    except RuntimeError as err:  # e.g. a layer with a fixed channel count the one-channel copy lacks
        raise ReceptiveFieldError(f"the positive copy of the model does not run: {str(err).splitlines()[0]}") from None
    stages = []
    for i, ((grad, (h, w)), stride) in enumerate(zip(grads, _strides(model, [hw for _, hw in grads], height))):
        support = grad[0].sum(dim=0) > 0
        if not torch.isfinite(grad).all() or not support.any():
            raise ReceptiveFieldError("the model could not be made a positive linear network (no finite support)")
        rows, cols = support.any(dim=1).nonzero()[:, 0], support.any(dim=0).nonzero()[:, 0]
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        if y0 == 0 or x0 == 0 or y1 == height - 1 or x1 == width - 1:
            raise ReceptiveFieldError(
                f"stage {i}: receptive field reaches the border of the {height}x{width} px input "
                f"(it is >= {min(height, width)} px); pass a larger size"
            )
        offset = ((y0 + y1) / 2 - stride * (h // 2), (x0 + x1) / 2 - stride * (w // 2))
        stages.append(dict(side=max(y1 - y0 + 1, x1 - x0 + 1), stride=stride, offset=offset))
    return stages


def theoretical_rf(model: nn.Module, size: int = 1024, collapse_channels: bool = True) -> list[int]:
    """Theoretical RF side (input pixels, max of height and width) of each stage's centre unit.

    Raises `ReceptiveFieldError` if a support touches the input border: the RF is then at least
    the input and the value would be a truncation. Cost: one forward and one backward per stage
    of the one-channel positive copy in float64: ~0.6 s for resnet50 or detnet59 at 1024 px on one
    thread; `collapse_channels=False` keeps the real widths, in float32: ~12 s for resnet50.
    """
    return [stage["side"] for stage in _probe(model, size, size, collapse_channels)]


def _probe_size(n: int, probe_size: int) -> int:
    """n plus a multiple of 64 (>= any stride), at least probe_size: same size-dependent padding as n."""
    return n + _ALIGN * max(0, math.ceil((probe_size - n) / _ALIGN))


def unit_offsets(model: nn.Module, height: int, width: int, probe_size: int = 1024) -> list[tuple[float, float]]:
    """Offset (oy, ox) of each stage's unit positions: unit (i, j) at stride s is centred on input pixel
    (s*i + oy, s*j + ox), the centre of its theoretical RF.

    The offset depends on the padding: 0 for ResNet's symmetric padding, (s-1)/2 where unit i
    covers input pixels [s*i, s*i+s-1]. Measured on a positive copy at the image size plus a
    multiple of 64 (>= probe_size), so the RF is not clipped and size-dependent padding matches.
    """
    ph, pw = _probe_size(height, probe_size), _probe_size(width, probe_size)
    return [stage["offset"] for stage in _probe(model, ph, pw)]


def _chebyshev_radius(mass: torch.Tensor, centre: tuple[float, float], fraction: float) -> float:
    """Smallest r with at least `fraction` of `mass` in pixels at max(|dy|, |dx|) <= r from centre."""
    dy = (torch.arange(mass.shape[0], dtype=torch.float64) - centre[0]).abs()[:, None]
    dist = torch.maximum(dy, (torch.arange(mass.shape[1], dtype=torch.float64) - centre[1]).abs()[None, :]).flatten()
    order = torch.argsort(dist)
    cum = torch.cumsum(mass.flatten().double()[order], dim=0)
    if not cum[-1] > 0:
        return math.nan  # no gradient reaches the input (e.g. a dead unit)
    index = int(torch.searchsorted(cum, fraction * cum[-1] * (1 - 1e-12)))
    return float(dist[order][min(index, len(order) - 1)])


def erf_maps(model: nn.Module, images: torch.Tensor) -> list[tuple[torch.Tensor, int, tuple[int, int]]]:
    """(ERF map H x W, stride, output map size) per stage: |d centre unit / d input| summed over
    input channels, averaged over the images. Eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        grads = _centre_grads(model, images.float())
    finally:
        model.train(was_training)
    strides = _strides(model, [hw for _, hw in grads], images.shape[-2])
    return [(grad.abs().sum(dim=1).mean(dim=0), stride, hw) for (grad, hw), stride in zip(grads, strides)]


def effective_rf(
    model: nn.Module, images: torch.Tensor, offsets: Sequence[tuple[float, float]] | None = None
) -> list[dict]:
    """Effective RF (Luo et al., 2016) of each stage: `erf_r50`, `erf_r90` (px), `stride`, `centre_px`.

    The map is `erf_maps`' (output grad 1 at the centre unit (h//2, w//2), every channel). Radii
    are Chebyshev (square) radii around the unit's input position s*(h//2) + oy, s*(w//2) + ox
    (`unit_offsets`, measured unless given): r is the smallest half-side such that pixels with
    max(|dy|, |dx|) <= r hold 50% / 90% of the mass; a square of side 2r+1 px, so the theoretical
    RF is r = (RF-1)/2. Mass outside the image is not seen: on images smaller than the RF the radii
    are those of the visible part. Cost: one forward of the batch and one backward per stage
    (resnet50, 4 images of 192 px: ~1.3 s on one thread) plus `unit_offsets` (~0.5 s) if not given.
    """
    height, width = images.shape[-2:]
    maps = erf_maps(model, images)
    if offsets is None:
        offsets = unit_offsets(model, height, width)
    rows = []
    for (mass, stride, (h, w)), (oy, ox) in zip(maps, offsets):
        centre = (stride * (h // 2) + oy, stride * (w // 2) + ox)
        rows.append(dict(
            stride=stride, centre_px=centre,
            erf_r50=_chebyshev_radius(mass, centre, 0.5), erf_r90=_chebyshev_radius(mass, centre, 0.9),
        ))
    return rows


def receptive_field_rows(
    name: str,
    model_random: nn.Module,
    models_trained: Sequence[nn.Module],
    images: torch.Tensor,
    theoretical_size: int = 1024,
) -> list[dict]:
    """One row per stage (P2, P3, ...): stride, theoretical RF and ERF radii, random vs trained.

    Trained radii are means over `models_trained` (NaN if none); all models share `model_random`'s
    architecture. One positive probe (>= theoretical_size px, congruent to the image size mod 64)
    gives the theoretical RF and the unit positions. Note: timm's ResNet-style init zeroes each
    block's last BatchNorm (zero_init_last), so at random init every residual block is an identity
    and the ERF is the stem's (r90 = 5 px for resnet50 and detnet59) at every stage. Cost (one
    thread, 4 images of 192 px): ~1.7 s for resnet50, ~2.3 s for detnet59, +1.3-1.7 s per trained model.
    """
    height, width = images.shape[-2:]
    probe = _probe(model_random, _probe_size(height, theoretical_size), _probe_size(width, theoretical_size))
    offsets = [stage["offset"] for stage in probe]
    random = effective_rf(model_random, images, offsets)
    trained = [effective_rf(m, images, offsets) for m in models_trained]
    info = getattr(model_random, "feature_info", None)
    stages = info.module_name() if hasattr(info, "module_name") else [f"stage{i}" for i in range(len(probe))]

    def mean(key: str, i: int) -> float:
        return sum(t[i][key] for t in trained) / len(trained) if trained else math.nan

    return [
        dict(
            backbone=name, stage=stages[i], level=f"P{i + 2}", stride=probe[i]["stride"],
            theoretical_rf_px=probe[i]["side"],
            erf_r50_random_px=random[i]["erf_r50"], erf_r90_random_px=random[i]["erf_r90"],
            erf_r50_trained_px=mean("erf_r50", i), erf_r90_trained_px=mean("erf_r90", i),
        )
        for i in range(len(probe))
    ]
