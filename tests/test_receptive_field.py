"""Receptive fields per backbone stage: exact supports on toy nets, known values on ResNet-50 and DetNet-59."""
from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
import torch.nn as nn

import backbones
from bench.analysis.receptive_field import (
    ReceptiveFieldError,
    effective_rf,
    erf_maps,
    receptive_field_rows,
    theoretical_rf,
    unit_offsets,
)


class OneConv(nn.Module):
    """A single 3x3 conv dressed as a feature extractor: one stage, stride 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


class Stack(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 s2 [A] -> max-pool 3x3 s2 [B] -> B + depthwise conv3x3 dil 2 [C]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU6())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dilated = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.GELU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.down(self.stem(x))
        b = self.pool(a)
        return [a, b, b + self.dilated(b)]


class Patchify(nn.Module):
    """A 2x2 stride-2 conv: unit i covers input pixels [2i, 2i+1], so it is centred at 2i + 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return backbones.create_backbone("resnet50")


@pytest.mark.parametrize("size", [9, 8])
def test_erf_of_one_conv_is_its_3x3_window(size: int) -> None:
    torch.manual_seed(0)
    model, images = OneConv(), torch.randn(2, 3, size, size)
    (mass, stride, hw), = erf_maps(model, images)
    assert stride == 1 and hw == (size, size)
    expected = torch.zeros(size, size, dtype=torch.bool)
    expected[3:6, 3:6] = True  # the centre unit is (size//2, size//2) = (4, 4) for 9 and 8 px
    assert torch.equal(mass > 0, expected)
    (row,) = effective_rf(model, images)
    assert row["centre_px"] == (4.0, 4.0) and row["stride"] == 1
    assert 0 <= row["erf_r50"] <= row["erf_r90"] <= 1  # Chebyshev radius 1 is the whole 3x3 window
    assert model.training  # the caller's mode is restored


def test_theoretical_rf_of_a_known_stack() -> None:
    # RF r and jump j per layer (r += (k_eff - 1) * j, then j *= stride):
    #   conv3x3:                r = 1 + 2*1 = 3,  j = 1
    #   conv3x3 s2      [A]:    r = 3 + 2*1 = 5,  j = 2
    #   max-pool 3x3 s2 [B]:    r = 5 + 2*2 = 9,  j = 4   (a max-pool left in would route the gradient to one input)
    #   conv3x3 dil 2   [C]:    k_eff = 5, r = 9 + 4*4 = 25 (the identity shortcut B is inside it)
    model = Stack()
    assert theoretical_rf(model, size=64) == [5, 9, 25]
    assert theoretical_rf(model, size=64, collapse_channels=False) == [5, 9, 25]  # real widths, same supports
    with pytest.raises(ReceptiveFieldError, match="border"):
        theoretical_rf(model, size=24)  # C's 25 px do not fit: reported, not truncated


def test_unit_offsets_follow_the_padding(resnet50: nn.Module) -> None:
    assert unit_offsets(Patchify(), 16, 16, probe_size=64) == [(0.5, 0.5)]
    # ResNet's convs and pools are symmetrically padded: unit i of a stride-s map is centred on s*i.
    assert unit_offsets(resnet50, 192, 192) == [(0.0, 0.0)] * 4


def test_resnet50_theoretical_rf(resnet50: nn.Module) -> None:
    # timm's ResNet-50 strides the 3x3 conv of each stage's first block (torchvision's "v1.5"):
    #   conv1 7x7 s2: 7 (j=2); max-pool 3x3 s2: 7 + 2*2 = 11 (j=4)
    #   layer1, 3 blocks at j=4:                 11 + 3*8        = 35
    #   layer2, 3x3 s2 at j=4 then 3 at j=8:     35 + 8 + 3*16   = 91
    #   layer3, 3x3 s2 at j=8 then 5 at j=16:    91 + 16 + 5*32  = 267
    #   layer4, 3x3 s2 at j=16 then 2 at j=32:  267 + 32 + 2*64  = 427
    # The same table (35, 91, 267, 427) is in samson-wang's "ResNet Receptive Field Size" gist; Araujo et
    # al. (Distill 2019) give 483 for TF-slim's ResNet-50, which strides the *last* block of each stage.
    rf = theoretical_rf(resnet50)
    assert rf == [35, 91, 267, 427]
    assert all(b > a for a, b in pairwise(rf))


def test_detnet59_keeps_stride_16_and_grows_rf() -> None:
    model = backbones.create_backbone("detnet59")
    assert model.feature_info.reduction() == [4, 8, 16, 16, 16]
    rf = theoretical_rf(model)
    # Stages 2-4 are ResNet-50's (35, 91, 267). Stages 5 and 6 are 3 bottlenecks each whose only
    # spatial layer is a 3x3 conv of dilation 2 (5 px effective kernel) at stride 16:
    #   3 blocks * (5 - 1) * 16 px = 192 px per stage -> 267 + 192 = 459, 459 + 192 = 651.
    assert rf[:3] == [35, 91, 267]
    assert rf[4] - rf[3] == rf[3] - rf[2] == 3 * (5 - 1) * 16
    assert rf[3:] == [459, 651]


def test_effective_rf_is_inside_the_theoretical_rf() -> None:
    # timm zero-initialises each block's last BN gamma (residual branches off at init); set the gammas
    # to 1 so every block contributes, as after training.
    torch.manual_seed(0)
    model = backbones.create_backbone("resnet50")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
    images = torch.randn(2, 3, 128, 128)
    rows = effective_rf(model, images, offsets=[(0.0, 0.0)] * 4)  # offsets: test_unit_offsets_follow_the_padding
    rf = [35, 91, 267, 427]  # test_resnet50_theoretical_rf
    assert [row["stride"] for row in rows] == [4, 8, 16, 32]
    for row, side in zip(rows, rf):
        assert 0 < row["erf_r50"] <= row["erf_r90"] <= (side - 1) / 2  # the gradient is zero outside the RF
    assert rows[0]["erf_r90"] < (rf[0] - 1) / 2  # and concentrated well inside it (Luo et al.)
    assert rows[1]["erf_r90"] > rows[0]["erf_r90"]  # the deeper stage sees farther


def test_receptive_field_rows(resnet50: nn.Module) -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    rows = receptive_field_rows("resnet50", resnet50, [resnet50], images, theoretical_size=512)
    assert [(r["stage"], r["level"], r["stride"], r["theoretical_rf_px"]) for r in rows] == [
        ("layer1", "P2", 4, 35), ("layer2", "P3", 8, 91), ("layer3", "P4", 16, 267), ("layer4", "P5", 32, 427)]
    # At timm's init every residual block is an identity: the ERF is the stem's (RF 11 -> radius 5).
    assert all(r["erf_r90_random_px"] == 5.0 and 0 < r["erf_r50_random_px"] <= 5.0 for r in rows)
    assert all(r["erf_r90_trained_px"] == r["erf_r90_random_px"] for r in rows)  # same weights, same ERF


def test_receptive_field_rows_without_trained_models() -> None:
    torch.manual_seed(0)
    rows = receptive_field_rows("stack", Stack(), [], torch.randn(2, 3, 32, 32), theoretical_size=64)
    assert [(r["level"], r["stride"], r["theoretical_rf_px"]) for r in rows] == [("P2", 2, 5), ("P3", 4, 9), ("P4", 4, 25)]
    assert all(math.isnan(r["erf_r50_trained_px"]) and math.isnan(r["erf_r90_trained_px"]) for r in rows)
    assert all(0 < r["erf_r50_random_px"] <= r["erf_r90_random_px"] <= (r["theoretical_rf_px"] - 1) / 2 for r in rows)
