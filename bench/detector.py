"""One Faster R-CNN + FPN builder for every backbone, from torchvision's detection modules.

The only parts of our own are the glue torchvision lacks for DetNet:
- `PyramidBackbone` names the pyramid P2-P6 by level, whatever the strides. torchvision's
  FPN already sums equal-resolution maps without upsampling (its nearest resize to the
  same size is the identity), so DetNet's P4-P6 need no special top-down path.
- `LevelRoIAlign` assigns RoIs to P2-P5 by level *index*. torchvision's
  `MultiScaleRoIAlign` infers levels from the maps' strides, so with DetNet's P4 and P5
  both at 1/16 it would map large RoIs to P4 and never pool from P5.
- Boxes stay float32 under mixed precision. torchvision takes the anchors' dtype from the
  feature maps and decodes boxes in the dtype of the predicted deltas, so under bf16 autocast
  a proposal at x = 1001.3 would become 1000 (bf16 spaces numbers 8 apart there), in training
  only, since evaluation runs in float32. The pyramid's maps and the RPN head's and box
  predictor's outputs therefore leave autocast as float32: anchors, box decoding, proposals
  and RoIAlign's coordinates are float32, while the convolutions and linear layers still
  compute in bf16.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch.utils._pytree import tree_map_only
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import LevelMapper

from backbones import create_backbone

from .settings import DetectorConfig

FPN_CHANNELS = 256
FIRST_LEVEL = 2  # stride-4 features are P2
ROI_LEVELS = (2, 3, 4, 5)  # the FPN paper's k_min..k_max for RoI pooling
DETNET_STRIDE = 16  # the stride DetNet keeps from stage 4 on
CANONICAL_SCALE, CANONICAL_LEVEL = 224, 4  # k = floor(4 + log2(sqrt(wh) / 224)) at the paper's scale


class LastLevelPool(LastLevelMaxPool):
    """torchvision's P6 (a kernel-1 max-pool of P5) with a chosen stride: 2 as in the FPN paper, or 1
    after a stage already at DetNet's stride 16, where P6 is then P5 itself."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: list[torch.Tensor], y: list[torch.Tensor], names: list[str]
                ) -> tuple[list[torch.Tensor], list[str]]:
        return [*x, F.max_pool2d(x[-1], kernel_size=1, stride=self.stride)], [*names, "pool"]


class PyramidBackbone(nn.Module):
    """Backbone features -> FPN -> OrderedDict {"p2": ..., "p6": ...}.

    Four backbone stages (ResNet: strides 4-32) get P6 as a stride-2 max-pool of P5; four ending
    at stride 16 (ResNet-50 with output_stride=16) get P6 = P5 at stride 16, so the pyramid is
    DetNet's, 4, 8, 16, 16, 16; five (DetNet: strides 4, 8, 16, 16, 16) map one-to-one onto P2-P6.
    """

    def __init__(self, body: nn.Module, out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.body = body
        channels = body.feature_info.channels()
        strides = body.feature_info.reduction()
        extra = LastLevelPool(1 if strides[-1] == DETNET_STRIDE else 2) if len(channels) == 4 else None
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra)
        if extra is not None:
            strides = strides + [strides[-1] * extra.stride]
        self.out_channels = out_channels
        self.level_names = [f"p{FIRST_LEVEL + i}" for i in range(len(strides))]
        self.strides = dict(zip(self.level_names, strides))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = OrderedDict((name, f) for name, f in zip(self.level_names, self.body(x)))
        # float32 under autocast too: AnchorGenerator takes the anchors' dtype from these maps
        return OrderedDict((name, p.float()) for name, p in zip(self.level_names, self.fpn(features).values()))


def outputs_to_float32(module: nn.Module, args: Any, outputs: Any) -> Any:
    """Forward hook: the module's tensor outputs as float32 (under autocast they are bf16/fp16)."""
    return tree_map_only(torch.Tensor, lambda t: t.float(), outputs)


class LevelRoIAlign(MultiScaleRoIAlign):
    """`MultiScaleRoIAlign` with levels and scales fixed from the pyramid, not inferred."""

    def __init__(
        self,
        strides: dict[str, int],
        canonical_scale: float = CANONICAL_SCALE,
        output_size: int = 7,
        sampling_ratio: int = 2,
    ) -> None:
        names = [f"p{level}" for level in ROI_LEVELS]
        super().__init__(names, output_size, sampling_ratio, canonical_scale=canonical_scale, canonical_level=CANONICAL_LEVEL)
        self.scales = [1.0 / strides[name] for name in names]
        self.map_levels = LevelMapper(ROI_LEVELS[0], ROI_LEVELS[-1], canonical_scale, CANONICAL_LEVEL)


def freeze_stem(body: nn.Module) -> None:
    """Freeze the modules before the one holding the first returned stage: the paper's frozen stage 1."""
    first_stage = body.feature_info.module_name()[0].split(".")[0]
    for name, module in body.named_children():
        if name == first_stage or name.startswith(f"{first_stage}_"):  # timm may flatten "layer1.0" to "layer1_0"
            break
        module.requires_grad_(False)


def resolve_norm(cfg: DetectorConfig, pretrained: bool) -> str:
    """'frozen' with ImageNet weights (paper Table 1), 'batch' from scratch (Table 2)."""
    if cfg.norm == "auto":
        return "frozen" if pretrained else "batch"
    return cfg.norm


def build_detector(
    backbone: str,
    num_classes: int,
    cfg: DetectorConfig,
    pretrained_file: str | Path | None = None,
) -> FasterRCNN:
    """Faster R-CNN + FPN on `backbone`; `num_classes` includes the background."""
    body = create_backbone(backbone, pretrained_file, zero_init_last=cfg.zero_init_last)
    if resolve_norm(cfg, pretrained_file is not None) == "frozen":
        body = freeze_batch_norm_2d(body)
        freeze_stem(body)
    neck = PyramidBackbone(body)
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in cfg.anchor_sizes),
        aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes),
    )
    if len(cfg.anchor_sizes) != len(neck.level_names):
        raise ValueError(f"{len(cfg.anchor_sizes)} anchor sizes for {len(neck.level_names)} pyramid levels")
    detector = FasterRCNN(
        neck,
        num_classes=num_classes,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_roi_pool=LevelRoIAlign(neck.strides, cfg.roi_canonical_scale),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_detections_per_img=cfg.box_detections_per_img,
        box_score_thresh=cfg.box_score_thresh,
    )
    for head in (detector.rpn.head, detector.roi_heads.box_predictor):  # box deltas decoded in float32
        head.register_forward_hook(outputs_to_float32)
    return detector
