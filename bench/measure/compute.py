"""How much arithmetic a model does: parameters and FLOPs, counted by torch's FlopCounterMode.

Detector inference is counted, and timed, with the RPN handing exactly `num_proposals` RoIs
per image to the box head (`inference_detector`): with random weights, the RPN's boxes and
NMS would keep an arbitrary, backbone-dependent number, and the box head's cost is
proportional to it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FasterRCNN

from ..detector import build_detector
from ..settings import DetectorConfig, Profile

# Module depth kept in flops_by_module.csv: the backbone's stages in each model.
BREAKDOWN_DEPTH = {"classifier": 1, "detector": 3}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class FlopCount:
    """One forward's FLOPs (2 per multiply-add, as FlopCounterMode counts) and what they leave out."""

    flops: int
    by_module: dict[str, int]  # module path (root excluded) -> FLOPs, down to the requested depth
    uncounted_ops: list[str]  # sorted, e.g. ["torchvision::nms", "torchvision::roi_align"]

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


class OpRecorder(TorchDispatchMode):
    """Records the ops outside aten that run: FlopCounterMode only has formulas for aten ops,
    so custom ops (torchvision's roi_align, nms) would otherwise count as silently zero."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace not in ("aten", "prim", "prims"):
            self.ops.add(func.name())
        return func(*args, **(kwargs or {}))


def count_flops(model: nn.Module, *inputs: Any, depth: int = 1) -> FlopCount:
    """Count one no-grad forward of `model(*inputs)`, with a per-module breakdown to `depth`."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter, OpRecorder() as recorder:
        model(*inputs)
    root = type(model).__name__  # FlopCounterMode names modules "<root class>.<path>"
    counts = {name: sum(by_op.values()) for name, by_op in counter.get_flop_counts().items()}
    by_module = {  # in the model's own order, parents before children
        name: counts[f"{root}.{name}"]
        for name, _ in model.named_modules()
        if f"{root}.{name}" in counts and name.count(".") < depth
    }
    return FlopCount(counter.get_total_flops(), by_module, sorted(recorder.ops))


def num_proposals(profile: Profile) -> int:
    """RoIs per image for detector costs: as the profile's detector evaluates, unless set."""
    return profile.measure.num_proposals or profile.detector.rpn_post_nms_top_n_test


def inference_detector(
    name: str, num_classes: int, cfg: DetectorConfig, size: int, num_proposals: int
) -> FasterRCNN:
    """The detector in eval mode, at `size` square, with exactly `num_proposals` RoIs per image.

    Random-init RPN regressions push many boxes out of the image (dropped as empty) and NMS
    keeps a data-dependent number, while the box head's cost is proportional to the count.
    So the RPN's box deltas are zeroed (its proposals are its anchors, ranked by objectness),
    NMS (IoU threshold 1.0) and score filtering are off, and the post-NMS top-n is
    `num_proposals` (the per-level pre-NMS top-n at least that): the box head sees as many
    RoIs as a trained detector keeping its top-n.
    """
    cfg = replace(
        cfg, min_size=size, max_size=size, rpn_post_nms_top_n_test=num_proposals,
        rpn_pre_nms_top_n_test=max(cfg.rpn_pre_nms_top_n_test, num_proposals),
    )
    detector = build_detector(name, num_classes, cfg)
    detector.rpn.nms_thresh, detector.rpn.score_thresh = 1.0, 0.0
    nn.init.zeros_(detector.rpn.head.bbox_pred.weight)
    nn.init.zeros_(detector.rpn.head.bbox_pred.bias)
    return detector.eval()


@contextmanager
def count_rois(detector: FasterRCNN) -> Iterator[list[int]]:
    """Collect, per forward, how many RoIs the box head processed (all images together)."""
    counts: list[int] = []
    hook = detector.roi_heads.box_head.register_forward_hook(lambda module, args, out: counts.append(out.shape[0]))
    try:
        yield counts
    finally:
        hook.remove()


def detector_compute(detector: FasterRCNN, size: int) -> tuple[FlopCount, int]:
    """FLOPs of one image through the detector, and the RoIs its box head saw."""
    with count_rois(detector) as rois:
        flops = count_flops(detector, [torch.rand(3, size, size)], depth=BREAKDOWN_DEPTH["detector"])
    return flops, rois[0]
