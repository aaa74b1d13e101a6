"""What the RPN hands the box head, watched during the ordinary evaluation pass (`ProposalEvaluator`).

Two of the paper's arguments live here, before any box is classified: small-object *recall*
(do the proposals cover the objects?) and *which pyramid level* each RoI pools from (does
DetNet's stride-16 P5 get used at all under the run's geometry?).

`ProposalProbe` lets the RPN keep up to `MAX_PROPOSALS` proposals after NMS, records them, and
passes the first `post_nms_top_n` on: torchvision sorts proposals by objectness after NMS, so
the box head sees exactly what it would without the probe and the detections do not change.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision.models.detection import FasterRCNN
from torchvision.ops import box_iou

PROPOSAL_COUNTS = (100, 300, 1000)
MAX_PROPOSALS = max(PROPOSAL_COUNTS)
IOUS = (0.5, 0.7)
# COCO's object sizes by annotation area (pycocotools' areaRng): small < 32², large > 96².
AREA_BINS = {"all": (0, 1e10), "small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e10)}


class ProposalProbe:
    """Context manager on a detector in eval mode: proposals and RoI levels of every image it sees, in order."""

    def __init__(self, model: FasterRCNN) -> None:
        self.model = model
        self.proposals: list[torch.Tensor] = []  # per image, in original image coordinates, best first
        self.levels: Counter[int] = Counter()  # P-level -> RoIs the box head pooled from it
        self._sizes: list[tuple[int, int]] = []

    def __enter__(self) -> ProposalProbe:
        rpn = self.model.rpn
        self._keep = rpn._post_nms_top_n["testing"]
        rpn._post_nms_top_n["testing"] = max(self._keep, MAX_PROPOSALS)
        self._hooks = [self.model.register_forward_pre_hook(self._remember_sizes),
                       rpn.register_forward_hook(self._record)]
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self.model.rpn._post_nms_top_n["testing"] = self._keep

    def _remember_sizes(self, module: Any, args: tuple) -> None:
        self._sizes = [tuple(image.shape[-2:]) for image in args[0]]

    def _record(self, module: Any, args: tuple, output: tuple) -> tuple:
        boxes, losses = output
        resized = args[0].image_sizes
        for proposals, (h, w), (oh, ow) in zip(boxes, resized, self._sizes):
            scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], device=proposals.device)
            self.proposals.append((proposals * scale).detach().cpu())
        kept = [proposals[:self._keep] for proposals in boxes]
        mapper = self.model.roi_heads.box_roi_pool.map_levels  # the pooler's own rule, as it applies it
        levels = mapper(kept).cpu() + int(mapper.k_min)
        self.levels.update(levels.tolist())
        return kept, losses


def proposal_recall(proposals: list[torch.Tensor], image_ids: list[int], coco_gt: COCO) -> list[dict[str, Any]]:
    """Share of ground-truth objects (non-crowd) that some top-k proposal covers at IoU >= t, per size."""
    best: dict[str, dict[int, list[float]]] = {area: {k: [] for k in PROPOSAL_COUNTS} for area in AREA_BINS}
    for boxes, image_id in zip(proposals, image_ids, strict=True):
        anns = [a for a in coco_gt.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        if not anns:
            continue
        gt = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
        areas = np.array([a["area"] for a in anns])
        for k in PROPOSAL_COUNTS:
            iou = box_iou(gt, boxes[:k].float()).max(dim=1).values.numpy() if len(boxes) else np.zeros(len(anns))
            for area, (low, high) in AREA_BINS.items():
                best[area][k] += iou[(areas >= low) & (areas <= high)].tolist()
    return [
        {"size": area, "proposals": k, "iou": t, "objects": len(values),
         "recall": float(np.mean(np.array(values) >= t)) if values else float("nan")}
        for area, by_k in best.items() for k, values in by_k.items() for t in IOUS
    ]


def level_rows(levels: Counter[int]) -> list[dict[str, Any]]:
    """RoIs per pyramid level P2-P5, with their share."""
    total = sum(levels.values())
    return [{"level": f"P{level}", "rois": levels.get(level, 0), "share": levels.get(level, 0) / total if total else
             float("nan")} for level in range(2, 6)]
