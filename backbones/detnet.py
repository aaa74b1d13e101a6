"""DetNet-59 (Li et al., 2018, "DetNet: A Backbone Network for Object Detection", arXiv:1804.06215).

Stages 1-4 are ResNet-50's, built with timm's own ResNet blocks. Stages 5 and 6 keep the
1/16 resolution of stage 4: each is three dilated bottlenecks (1x1 -> 3x3 dilation 2 ->
1x1, width 256, 1024 output channels, stride 1); the first of each stage projects its
shortcut with a 1x1 conv (the paper's block B), the other two are identity (block A).

No weights are published for download here: `pretrained_cfg_overlay=dict(file=...)` loads
a local `.pth`/`.safetensors` file, in this module's layout, timm/torchvision ResNet
names, or the DetNet_pytorch port's layout (mapped by `checkpoint_filter_fn`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, downsample_conv, make_blocks

__all__ = ["DetNet", "checkpoint_filter_fn"]


def make_dilated_stage(
    in_chs: int, planes: int = 256, depth: int = 3, dilation: int = 2, project: bool = True,
) -> nn.Sequential:
    """One DetNet stage, all stride 1: block B (projection shortcut) then identity blocks A; with
    `project=False` the first block is an A block too (the paper's NoProj ablation), which needs
    `in_chs` equal to the stage's output channels."""
    out_chs = planes * Bottleneck.expansion
    if not project and in_chs != out_chs:
        raise ValueError(f"an identity shortcut needs {out_chs} input channels, got {in_chs}")
    projection = downsample_conv(in_chs, out_chs, kernel_size=1, stride=1) if project else None
    blocks = [Bottleneck(in_chs, planes, downsample=projection, dilation=dilation, first_dilation=dilation)]
    blocks += [Bottleneck(out_chs, planes, dilation=dilation, first_dilation=dilation) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class DetNet(nn.Module):
    """ResNet-50 stages 1-4 followed by dilated stages that stay at stride 16."""

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6),
        dilated_layers: tuple[int, ...] = (3, 3),
        dilated_planes: int = 256,
        projected_stages: tuple[bool, ...] = (True, True),
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        # Stage 1: the ResNet stem.
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=64, reduction=2, module="act1")]

        # Stages 2-4: exactly ResNet-50's layer1..layer3.
        stages, stage_info = make_blocks((Bottleneck,) * len(layers), (64, 128, 256)[: len(layers)], layers, 64)
        for name, stage in stages:
            self.add_module(name, stage)
        self.feature_info += stage_info

        # Stages 5-6: dilated, stride 1, named layer4/layer5 as in the DetNet_pytorch port.
        in_chs = stage_info[-1]["num_chs"]
        for offset, (depth, project) in enumerate(zip(dilated_layers, projected_stages, strict=True)):
            name = f"layer{len(layers) + offset + 1}"
            self.add_module(name, make_dilated_stage(in_chs, dilated_planes, depth, project=project))
            in_chs = dilated_planes * Bottleneck.expansion
            self.feature_info.append(dict(num_chs=in_chs, reduction=16, module=name))
        self.stage_names = [info["module"] for info in self.feature_info[1:]]

        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            stage = getattr(self, name)
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: DetNet) -> dict[str, torch.Tensor]:
    """Map the DetNet_pytorch port's names onto ours: its shortcut projection is `extra_conv`."""
    return {key.replace(".extra_conv.", ".downsample."): value for key, value in state_dict.items()}


def _create_detnet(variant: str, pretrained: bool = False, **kwargs: Any) -> DetNet:
    return build_model_with_cfg(
        DetNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(1, 2, 3, 4, 5)),  # stages 2-6, the FPN's inputs
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",  # no download: weights come from local files (pretrained_cfg_overlay=dict(file=...))
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (14, 14),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"detnet59": _cfg(), "detnet59_noproj": _cfg()})


@register_model
def detnet59(pretrained: bool = False, **kwargs: Any) -> DetNet:
    """DetNet-59: ResNet-50 stages 1-4 (3, 4, 6 blocks) + two dilated stages of 3 blocks."""
    model_args = dict(layers=(3, 4, 6), dilated_layers=(3, 3), dilated_planes=256)
    return _create_detnet("detnet59", pretrained, **dict(model_args, **kwargs))


@register_model
def detnet59_noproj(pretrained: bool = False, **kwargs: Any) -> DetNet:
    """DetNet-59-NoProj, the paper's ablation: stage 6 starts with an identity (A) block, so it
    simply continues stage 5 instead of opening a new pyramid level with a projection."""
    model_args = dict(layers=(3, 4, 6), dilated_layers=(3, 3), dilated_planes=256, projected_stages=(True, False))
    return _create_detnet("detnet59_noproj", pretrained, **dict(model_args, **kwargs))
