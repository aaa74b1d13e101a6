"""COCO box evaluation: detector outputs -> COCO results -> pycocotools' COCOeval numbers.

Besides the 12 summary stats, the AP and AR at every IoU threshold are kept per object
size, because the DetNet paper's Tables 3 and 4 report AP50/AP85 and AR50/AR85 for small
and large objects, which `COCOeval.summarize()` does not give.

Run standalone on saved results (`bench.evaluate_command`)::

    python -m bench.evaluate --gt instances_val.json --detections results.json --format json
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import numbers
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .errors import UsageError
from .progress import progress as progress_bar

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AREA_RANGES = ("all", "small", "medium", "large")
MAX_DETS = 100
_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")

# Contiguous detector label -> COCO category id: a dict, or a sequence indexed by label.
LabelMap = Mapping[int, int] | Sequence[int]


@dataclass
class EvalResult:
    """COCOeval's numbers in plain Python types, so a run can store them as JSON."""

    stats: dict[str, float]  # the 12 summary stats by COCO_STAT_NAMES; -1 = no GT in that range
    ap_by_iou: dict[str, dict[str, float]]  # area range -> "0.50".."0.95" -> AP at maxDets=100
    ar_by_iou: dict[str, dict[str, float]]  # same shape, AR
    per_category: dict[str, float]  # category name -> AP@[.50:.95], all areas, maxDets=100
    num_images: int
    num_detections: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries > -1, or -1 if there are none: the rule of COCOeval.summarize."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _by_iou(cocoeval: COCOeval, key: str) -> dict[str, dict[str, float]]:
    """Per area range and IoU threshold, from eval["precision"] (TxRxKxAxM) or eval["recall"] (TxKxAxM)."""
    params = cocoeval.params
    values = cocoeval.eval[key]
    m = params.maxDets.index(MAX_DETS)
    return {
        area: {f"{iou:.2f}": _mean_valid(values[t, ..., a, m]) for t, iou in enumerate(params.iouThrs)}
        for a, area in enumerate(params.areaRngLbl)
    }


def _per_category(coco_gt: COCO, cocoeval: COCOeval) -> dict[str, float]:
    """AP@[.50:.95] per category; the K axis of eval["precision"] follows params.catIds."""
    params = cocoeval.params
    precision = cocoeval.eval["precision"][..., params.areaRngLbl.index("all"), params.maxDets.index(MAX_DETS)]
    return {coco_gt.cats[cat_id]["name"]: _mean_valid(precision[:, :, k]) for k, cat_id in enumerate(params.catIds)}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_detections(coco_gt: COCO, detections: Any) -> None:
    """Raise ValueError on results that pycocotools would reject with a bare assert, crash on, or silently drop."""
    if not isinstance(detections, list):
        raise ValueError(f"detections must be a list of objects, got {type(detections).__name__}")
    image_ids, category_ids = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for i, det in enumerate(detections):
        if not isinstance(det, dict) or not all(key in det for key in _DETECTION_KEYS):
            raise ValueError(f"detection {i} is not an object with keys {', '.join(_DETECTION_KEYS)}")
        bbox = det["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))) or not _is_number(det["score"]):
            raise ValueError(f"detection {i} needs a bbox of 4 numbers [x, y, w, h] and a numeric score")
        if det["image_id"] not in image_ids:
            raise ValueError(f"detection {i} has image_id {det['image_id']!r}, which is not in the ground truth")
        if det["category_id"] not in category_ids:
            raise ValueError(f"detection {i} has category_id {det['category_id']!r}, which is not in the ground truth")


def _load_results(coco_gt: COCO, detections: list[dict]) -> COCO:
    """COCO.loadRes, except that an empty list gives an empty result set (loadRes reads detections[0])."""
    if detections:
        return coco_gt.loadRes([dict(det) for det in detections])  # loadRes writes id/area/iscrowd into each dict
    results = COCO()
    results.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    results.createIndex()
    return results


def score(coco_gt: COCO, detections: list[dict]) -> tuple[EvalResult, COCOeval]:
    """Run COCOeval (bbox) over every ground-truth image; raise ValueError on malformed detections.

    Returns the numbers and the evaluated COCOeval, whose per-image matches (`evalImgs`) feed
    the bootstrap intervals (`bench.bootstrap.ImageEval`).
    """
    _check_detections(coco_gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress with print()
        cocoeval = COCOeval(coco_gt, _load_results(coco_gt, detections), "bbox")
        cocoeval.params.imgIds = sorted(coco_gt.getImgIds())
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    result = EvalResult(
        stats={name: float(value) for name, value in zip(COCO_STAT_NAMES, cocoeval.stats, strict=True)},
        ap_by_iou=_by_iou(cocoeval, "precision"),
        ar_by_iou=_by_iou(cocoeval, "recall"),
        per_category=_per_category(coco_gt, cocoeval),
        num_images=len(cocoeval.params.imgIds),
        num_detections=len(detections),
    )
    return result, cocoeval


def evaluate_detections(coco_gt: COCO, detections: list[dict]) -> EvalResult:
    """pycocotools' numbers for `detections`, see `score`."""
    return score(coco_gt, detections)[0]


def detections_to_coco(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_category_id: LabelMap,
) -> list[dict[str, Any]]:
    """torchvision detector outputs (xyxy boxes in original image pixels, labels 1..K) -> COCO results."""
    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        xyxy = output["boxes"].detach().cpu()
        # xyxy -> xywh by hand: importing torchvision.ops for this would add a second to the CLI's start-up.
        boxes = torch.cat((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]), dim=1).tolist()
        scores = output["scores"].detach().cpu().tolist()
        labels = output["labels"].cpu().tolist()
        results += [
            {"image_id": int(image_id), "category_id": int(label_to_category_id[label]), "bbox": box, "score": score}
            for box, score, label in zip(boxes, scores, labels, strict=True)
        ]
    return results


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: Iterable[tuple[Sequence[torch.Tensor], Sequence[Mapping[str, Any]]]],
    label_to_category_id: LabelMap,
    device: torch.device | str,
    progress: bool = True,
    desc: str = "evaluate",
) -> list[dict[str, Any]]:
    """Run the detector over (images, targets) batches and return COCO results; leaves the model in eval mode."""
    model.eval()
    detections = []
    with progress_bar(len(loader) if isinstance(loader, Sized) else 0, desc, enabled=progress) as bar:
        for images, targets in loader:
            outputs = model([image.to(device) for image in images])
            detections += detections_to_coco(outputs, [target["image_id"] for target in targets], label_to_category_id)
            bar.update()
    return detections


def read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


if __name__ == "__main__":  # the command lives apart, so that library users of this module never load the CLI
    from .evaluate_command import main

    raise SystemExit(main())
