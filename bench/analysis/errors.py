"""Error breakdown per object size, as pycocotools' retired `COCOeval.analyze` (Hoiem et al.).

One AP hides *why* a detector fails. Each step of the breakdown forgives one more kind of
error and re-scores: C75 and C50 (strict and loose localisation), Loc (IoU .10: only
duplicates and confusions remain), Sim (confusion with a class of the same supercategory
forgiven), Oth (any class confusion forgiven), BG (background false positives removed) and
FN (missed objects recovered). Gaps between consecutive steps measure each error's cost.

Everything is scored by pycocotools' own `COCOeval`: one all-category pass at IoU
.75/.50/.10 gives C75/C50/Loc, and per category k one pass each for Sim and Oth on a copy of
the ground truth where the forgiven classes' boxes are relabelled k and made crowd
(`iscrowd=1`), so a detection matched to them is ignored instead of a false positive.
That is the mechanism of mmdetection's `coco_error_analysis.py` and of the MATLAB
`analyze`; note that crowd boxes overlap by intersection over the *detection's* area.

Known properties, kept as pycocotools gives them: Loc <= Sim <= Oth <= BG <= FN always
(crowd boxes only turn false positives into ignored detections), but C75 <= C50 <= Loc is
not guaranteed within a size range: there COCOeval lets a detection match an out-of-range
box only when no in-range box clears the threshold, so at IoU .1 a detection of a large
object can take a medium one and leave another detection a false positive. Unlike
mmdetection (which counts them as 0), categories without ground truth of a size are left
out of the mean, as `COCOeval.summarize` does, so C75/C50 equal its AP75/AP50.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STEPS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = ("all", "small", "medium", "large")
MAX_DETS = 100
_IOU_THRS = (0.75, 0.5, 0.1)  # C75, C50, Loc; COCOeval's default grid holds .75 and .5 exactly
_FORGIVING_IOU = 0.1


@dataclass
class ErrorBreakdown:
    """The breakdown of one detector on one ground truth.

    `ap[area][step]` is the AP in [0, 1], NaN where undefined (Sim when `sim_skipped`, or
    no ground truth of that size). `precision[area]` is [len(STEPS), 101]: the PR curves at
    COCO's 101 recall thresholds, averaged over categories with ground truth (for plots).
    """

    ap: dict[str, dict[str, float]]
    precision: dict[str, np.ndarray]
    sim_skipped: bool

    def to_rows(self, **labels: object) -> list[dict]:
        """Long rows (labels..., area, step, ap), e.g. for tables/error_breakdown.csv."""
        return [{**labels, "area": area, "step": step, "ap": self.ap[area][step]}
                for area in AREAS for step in STEPS]


def _supercategory_members(coco_gt: COCO) -> dict[int, set[int]]:
    """Category id -> the ids sharing its supercategory (itself included).

    A category without the field is a group of its own: a missing name groups nothing.
    """
    by_name: dict[str, set[int]] = defaultdict(set)
    members: dict[int, set[int]] = {}
    for cat in coco_gt.dataset.get("categories", []):
        name = cat.get("supercategory")
        if name is None:
            members[cat["id"]] = {cat["id"]}
        else:
            by_name[name].add(cat["id"])
            members[cat["id"]] = by_name[name]
    return members


def supercategories_group(coco_gt: COCO) -> bool:
    """Whether supercategories form real groups, i.e. whether Sim says anything.

    If every supercategory holds one category, Sim equals Loc; if one supercategory holds
    every category, Sim equals Oth. Only a partition in between separates them.
    """
    groups = {frozenset(m) for m in _supercategory_members(coco_gt).values()}
    return len(groups) > 1 and any(len(g) > 1 for g in groups)


def _quiet_coco(dataset: dict) -> COCO:
    """A COCO object over `dataset` without pycocotools' progress prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _own_copy(coco_gt: COCO) -> dict:
    """A deep copy of the ground truth (COCOeval writes 'ignore' flags into its annotations)."""
    dataset = copy.deepcopy(coco_gt.dataset)
    for ann in dataset.setdefault("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    return dataset


def _results(gt: COCO, detections: list[dict]) -> COCO:
    """COCO.loadRes on copies (it writes id/area into the dicts); empty input is allowed."""
    image_ids, cat_ids = set(gt.getImgIds()), set(gt.getCatIds())
    for i, det in enumerate(detections):
        if det["image_id"] not in image_ids or det["category_id"] not in cat_ids:
            raise ValueError(f"detection {i}: image_id or category_id not in the ground truth")
    if detections:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes(copy.deepcopy(detections))
    return _quiet_coco({"images": list(gt.dataset.get("images", [])),
                        "categories": copy.deepcopy(gt.dataset.get("categories", [])),
                        "annotations": []})


def _precision(gt: COCO, dt: COCO, iou_thrs: Iterable[float], cat_ids: list[int]) -> np.ndarray:
    """COCOeval's precision [T, R, K, A] at maxDets=100 over every ground-truth image."""
    cocoeval = COCOeval(gt, dt, "bbox")
    cocoeval.params.imgIds = sorted(gt.getImgIds())
    cocoeval.params.catIds = list(cat_ids)
    cocoeval.params.iouThrs = np.array(list(iou_thrs), dtype=np.float64)
    cocoeval.params.maxDets = [MAX_DETS]
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval.evaluate()
        cocoeval.accumulate()
    return cocoeval.eval["precision"][..., 0]


def _forgiving_precision(dataset: dict, dt: COCO, cat_id: int, forgiven: set[int]) -> np.ndarray:
    """Precision [R, A] of category `cat_id` at IoU .1, detections on `forgiven` classes ignored.

    The forgiven classes' boxes become crowd boxes of `cat_id`: COCOeval prefers real
    matches and marks a detection matched to a crowd box as ignored, so only confusions
    with no correct box available are forgiven, exactly as the analysis defines.
    """
    anns = []
    for ann in dataset["annotations"]:
        if ann["category_id"] == cat_id:
            anns.append(ann)
        elif ann["category_id"] in forgiven:
            anns.append({**ann, "category_id": cat_id, "iscrowd": 1, "ignore": 1})
    gt = _quiet_coco({"images": dataset["images"], "categories": dataset["categories"], "annotations": anns})
    return _precision(gt, dt, [_FORGIVING_IOU], [cat_id])[0, :, 0, :]


def _mean_valid(values: np.ndarray, valid: np.ndarray, axis: int | None) -> np.ndarray | float:
    """Mean over categories with ground truth (COCOeval.summarize's rule); NaN if none."""
    if not valid.any():
        return math.nan if axis is None else np.full(values.shape[0], np.nan)
    picked = values[:, valid]  # [R, K_valid]
    return float(np.mean(picked)) if axis is None else picked.mean(axis=1)


def error_breakdown(coco_gt: COCO, detections: list[dict]) -> ErrorBreakdown:
    """Score `detections` (COCO results dicts, bbox xywh) step by step; `coco_gt` is not changed."""
    dataset = _own_copy(coco_gt)
    gt = _quiet_coco(dataset)
    dt = _results(gt, detections)
    cat_ids = sorted(gt.getCatIds())
    sim_skipped = not supercategories_group(gt)
    members = _supercategory_members(gt)

    base = _precision(gt, dt, _IOU_THRS, cat_ids)  # [3, R, K, A]
    _, R, K, A = base.shape
    valid = base[0, 0] > -1  # [K, A]: COCOeval leaves -1 where a category has no GT of a size
    ps = np.full((len(STEPS), R, K, A), -1.0)
    ps[:3] = base
    for k, cat_id in enumerate(cat_ids):
        if not valid[k].any():
            continue
        others = set(cat_ids) - {cat_id}
        similar = members.get(cat_id, {cat_id}) - {cat_id}
        # a class with no sibling has nothing to forgive: Sim is Loc (saves a pass)
        ps[3, :, k] = _forgiving_precision(dataset, dt, cat_id, similar) if similar else base[2, :, k]
        ps[4, :, k] = _forgiving_precision(dataset, dt, cat_id, others) if others else base[2, :, k]
    ps[5] = np.where(valid, ps[4] > 0, -1.0)  # BG: precision 1 up to Oth's final recall
    ps[6] = np.where(valid, 1.0, -1.0)  # FN: every miss recovered

    ap: dict[str, dict[str, float]] = {}
    precision: dict[str, np.ndarray] = {}
    for a, area in enumerate(AREAS):
        ap[area] = {step: _mean_valid(ps[s, :, :, a], valid[:, a], None) for s, step in enumerate(STEPS)}
        precision[area] = np.stack([_mean_valid(ps[s, :, :, a], valid[:, a], 1) for s in range(len(STEPS))])
        if sim_skipped:
            ap[area]["Sim"] = math.nan
            precision[area][STEPS.index("Sim")] = np.nan
    return ErrorBreakdown(ap=ap, precision=precision, sim_skipped=sim_skipped)
