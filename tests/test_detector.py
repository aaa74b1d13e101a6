"""The detector: pyramid levels per backbone, RoI level assignment, normalisation choice."""
from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from backbones import create_backbone
from bench.detector import LevelRoIAlign, PyramidBackbone, build_detector
from bench.settings import get_profile

BACKBONES = ("detnet59", "resnet50", "resnet101")
IMAGE = 512  # large enough for an RoI of every level 2..5


def level_maps(strides: dict[str, int]) -> dict[str, torch.Tensor]:
    """One map per level, filled with its level number, at that level's resolution."""
    return {name: torch.full((1, 1, IMAGE // s, IMAGE // s), float(name[1:])) for name, s in strides.items()}


# Box side -> FPN rule k = floor(4 + log2(side / 224)) clamped to 2..5.
BOX_LEVELS = [(16, 2), (80, 2), (112, 3), (200, 3), (224, 4), (447, 4), (448, 5)]


@pytest.fixture(scope="module", params=BACKBONES)
def neck(request: pytest.FixtureRequest) -> PyramidBackbone:
    return PyramidBackbone(create_backbone(request.param)).eval()


def test_pyramid_levels_and_strides(neck: PyramidBackbone) -> None:
    with torch.no_grad():
        pyramid = neck(torch.randn(1, 3, 128, 128))
    assert list(pyramid) == ["p2", "p3", "p4", "p5", "p6"]
    assert all(p.shape[1] == 256 for p in pyramid.values())
    assert [128 // p.shape[-1] for p in pyramid.values()] == list(neck.strides.values())
    detnet = neck.body.feature_info.reduction()[-1] == 16
    assert list(neck.strides.values()) == ([4, 8, 16, 16, 16] if detnet else [4, 8, 16, 32, 64])


def test_rois_pool_from_their_fpn_level(neck: PyramidBackbone) -> None:
    pooler = LevelRoIAlign(neck.strides)
    boxes = torch.tensor([[0.0, 0.0, side, side] for side, _ in BOX_LEVELS])
    pooled = pooler(level_maps(neck.strides), [boxes], [(IMAGE, IMAGE)])
    assert pooled[:, 0, 3, 3].tolist() == [float(level) for _, level in BOX_LEVELS]


def test_torchvision_pooler_misses_detnet_p5() -> None:
    """The failure LevelRoIAlign exists for: strides 16, 16 make torchvision stop at P4."""
    strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 16}
    boxes = torch.tensor([[0.0, 0.0, 480.0, 480.0]])
    inferred = MultiScaleRoIAlign(list(strides), 7, 2)(level_maps(strides), [boxes], [(IMAGE, IMAGE)])
    fixed = LevelRoIAlign(strides)(level_maps(strides), [boxes], [(IMAGE, IMAGE)])
    assert inferred[0, 0, 3, 3].item() == 4.0
    assert fixed[0, 0, 3, 3].item() == 5.0


def test_norm_follows_pretraining(tmp_path) -> None:
    cfg = get_profile("smoke").detector
    scratch = build_detector("resnet50", 3, cfg)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in scratch.modules())
    assert all(p.requires_grad for p in scratch.parameters())

    weights = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50").state_dict(), weights)
    pretrained = build_detector("resnet50", 3, cfg, weights)
    body = pretrained.backbone.body
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert not body.conv1.weight.requires_grad and body.layer1[0].conv1.weight.requires_grad


@pytest.mark.parametrize("name", [*BACKBONES, "convnext_atto"])  # any timm model with 4+ stages
def test_detector_inference_shapes(name: str) -> None:
    cfg = dataclasses.replace(get_profile("smoke").detector, box_score_thresh=0.0)  # random weights: keep every box
    model = build_detector(name, 4, cfg).eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 100, 120)])
    assert set(out) == {"boxes", "scores", "labels"}
    assert out["boxes"].shape[0] > 0 and out["boxes"].shape[1] == 4
    assert out["boxes"][:, 2].max() <= 120 and out["boxes"][:, 3].max() <= 100  # original image scale
