"""The evaluators of a detector's evaluation pass, each over the pure function that computes its numbers.

`CocoEvaluator` gathers the pass's detections and scores them with pycocotools once; the
evaluators that need those detections or that COCOeval (the bootstrap's per-image matches,
the error breakdown) read them from it instead of scoring again, so they come after it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..analysis.errors import error_breakdown
from ..analysis.proposals import ProposalProbe, level_rows, proposal_recall
from ..bootstrap import ImageEval
from ..files import write_json
from .coco import LabelMap, detections_to_coco, score
from .evaluator import Evaluator, Outputs, Targets, gather, in_image_order

BOX_SCORES = "bbox"  # CocoEvaluator's result: metrics.json's scores (EvalResult.to_dict())


class CocoEvaluator(Evaluator):
    """COCO box metrics by pycocotools, as `{BOX_SCORES: EvalResult.to_dict()}`.

    `coco_gt` is needed on rank 0 only; `detections_file`, if given, receives the detections
    (COCO results, in image order). `sharded`: every process predicted a shard of the images.
    """

    def __init__(self, coco_gt: COCO | None, label_to_category_id: LabelMap, detections_file: Path | None = None,
                 sharded: bool = True) -> None:
        self.coco_gt, self.label_to_category_id = coco_gt, label_to_category_id
        self.detections_file, self.sharded = detections_file, sharded
        self.reset()

    def reset(self) -> None:
        self._images: list[list[dict[str, Any]]] = []  # per image, its COCO results
        self._scored: tuple[list[dict[str, Any]], COCOeval] | None = None
        self._evaluated = False

    def process(self, targets: Targets, outputs: Outputs) -> None:
        self._images += [detections_to_coco([output], [target["image_id"]], self.label_to_category_id)
                         for target, output in zip(targets, outputs, strict=True)]

    def evaluate(self) -> dict[str, Any] | None:
        shards = gather(self._images, self.sharded)
        self._evaluated = True
        if shards is None:
            return None
        detections = [det for image in in_image_order(shards) for det in image]
        if self.detections_file is not None:
            write_json(self.detections_file, detections, indent=None)
        result, cocoeval = score(self.coco_gt, detections)
        self._scored = detections, cocoeval
        return {BOX_SCORES: result.to_dict()}

    def scored(self) -> tuple[list[dict[str, Any]], COCOeval] | None:
        """The gathered detections and their evaluated COCOeval; None on ranks other than 0."""
        if not self._evaluated:
            raise RuntimeError("evaluate the CocoEvaluator before the evaluators that read its scores")
        return self._scored


class ImageMatchesEvaluator(Evaluator):
    """The per-image matches of the COCOeval (`bench.bootstrap.ImageEval`) saved to `path`; adds no numbers."""

    def __init__(self, boxes: CocoEvaluator, path: Path) -> None:
        self.boxes, self.path = boxes, path

    def evaluate(self) -> dict[str, Any] | None:
        scored = self.boxes.scored()
        if scored is None:
            return None
        ImageEval.from_cocoeval(scored[1]).save(self.path)
        return {}


class ErrorBreakdownEvaluator(Evaluator):
    """The COCO error breakdown per object size (`bench.analysis.errors`) and its PR curves."""

    def __init__(self, boxes: CocoEvaluator) -> None:
        self.boxes = boxes

    def evaluate(self) -> dict[str, Any] | None:
        scored = self.boxes.scored()
        if scored is None:
            return None
        breakdown = error_breakdown(self.boxes.coco_gt, scored[0])
        return {"error_breakdown": breakdown.to_rows(), "sim_skipped": breakdown.sim_skipped,
                "error_curves": {area: curves.tolist() for area, curves in breakdown.precision.items()}}


class ProposalEvaluator(Evaluator):
    """RPN proposal recall per object size and the pyramid level of every RoI (`bench.analysis.proposals`),
    watched on the model during the pass."""

    def __init__(self, coco_gt: COCO | None, sharded: bool = True) -> None:
        self.coco_gt, self.sharded = coco_gt, sharded
        self.reset()

    def reset(self) -> None:
        self._probe: ProposalProbe | None = None
        self._image_ids: list[int] = []

    @contextmanager
    def watch(self, model: torch.nn.Module) -> Iterator[None]:
        with ProposalProbe(model) as self._probe:
            yield

    def process(self, targets: Targets, outputs: Outputs) -> None:
        self._image_ids += [target["image_id"] for target in targets]

    def evaluate(self) -> dict[str, Any] | None:
        if self._probe is None:
            raise RuntimeError("ProposalEvaluator saw no pass: run it through `predict`, which watches the model")
        images = list(zip(self._image_ids, self._probe.proposals, strict=True))
        shards = gather((images, self._probe.levels), self.sharded)
        if shards is None:
            return None
        ordered = in_image_order([images for images, _ in shards])
        levels = sum((levels for _, levels in shards), Counter())
        return {"proposal_recall": proposal_recall([boxes for _, boxes in ordered], [i for i, _ in ordered], self.coco_gt),
                "roi_levels": level_rows(levels)}
