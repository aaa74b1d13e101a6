"""One evaluation pass of a trained detector, and `bench.evaluate --run`: the same pass on saved checkpoints.

The pass writes everything a report reads about accuracy and its mechanism into one
backbone-seed folder: detections.json, metrics.json's scores, evaluation.npz (per-image
matches for the bootstrap) and analysis.json (error breakdown, proposal recall, RoI levels).
`reevaluate` runs it on a finished run's checkpoints, on the run's own validation set or
another COCO-format one, into a new folder with the same tables and report, without training.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO

from . import checkpoint, comm, configure, data, detector, evaluate, report
from .analysis.errors import error_breakdown
from .analysis.proposals import ProposalProbe, level_rows, proposal_recall
from .bootstrap import ImageEval
from .checks import check_device, fresh_dir
from .config import RunConfig
from .errors import UsageError
from .files import write_json, write_text

ANALYSIS_FILE = "analysis.json"
COPIED = ("measurements.csv", "flops_by_module.csv", "environment.json", "receptive_field.csv")


def evaluate_model(model: torch.nn.Module, val_set: data.CocoDetection, coco_gt: COCO | None, out_dir: Path,
                   device: torch.device, batch_size: int = 2, workers: int = 0, progress: bool = True,
                   desc: str = "evaluate") -> dict[str, Any] | None:
    """Predict the validation set once, score it, analyse it; returns metrics.json's evaluation part.

    Under torchrun every process predicts its shard of the images (rank, rank + world, ...) with
    rank 0's weights and buffers, and rank 0 puts the detections back in image order and scores
    them once, so the numbers equal a single process's exactly; the other ranks return None.
    """
    rank, world = comm.rank(), comm.world_size()
    start = time.perf_counter()
    comm.broadcast_state(checkpoint.unwrap(model))
    loader = data.build_eval_loader(val_set, batch_size=batch_size, workers=workers, rank=rank, world=world)
    with ProposalProbe(model) as probe:
        detections = evaluate.predict(model, loader, val_set.label_to_category_id, device,
                                      progress=progress and rank == 0, desc=desc)
    positions = list(range(rank, len(val_set), world))
    shard = (detections, list(zip(positions, probe.proposals)), probe.levels)
    if world > 1:
        gathered = comm.gather_object(shard)
        if gathered is None:
            return None
        detections, proposals, levels = _in_image_order(gathered, val_set)
    else:
        proposals, levels = probe.proposals, probe.levels
    write_json(out_dir / "detections.json", detections, indent=None)
    scores, cocoeval = evaluate.score(coco_gt, detections)
    ImageEval.from_cocoeval(cocoeval).save(out_dir / "evaluation.npz")
    breakdown = error_breakdown(coco_gt, detections)
    write_json(out_dir / ANALYSIS_FILE, {
        "error_breakdown": breakdown.to_rows(), "sim_skipped": breakdown.sim_skipped,
        "error_curves": {area: curves.tolist() for area, curves in breakdown.precision.items()},
        "proposal_recall": proposal_recall(proposals, val_set.ids, coco_gt),
        "roi_levels": level_rows(levels),
    })
    return {**scores.to_dict(), "eval_seconds": round(time.perf_counter() - start, 2)}


def _in_image_order(shards: list, val_set: data.CocoDetection) -> tuple[list[dict], list[torch.Tensor], Counter]:
    """The ranks' shards merged back into one process's order: by image, each image's detections as predicted."""
    position = {image_id: i for i, image_id in enumerate(val_set.ids)}
    detections = sorted((d for dets, _, _ in shards for d in dets), key=lambda d: position[d["image_id"]])
    proposals = [boxes for _, boxes in sorted((p for _, props, _ in shards for p in props), key=lambda p: p[0])]
    return detections, proposals, sum((levels for _, _, levels in shards), Counter())


def trained_detector(cfg: RunConfig, name: str, num_classes: int, state: dict[str, Any]) -> torch.nn.Module:
    """The run's detector with a checkpoint's weights: the norm it trained with, no weights file needed."""
    audit = cfg.audit.get(name)
    norm = audit.norm if audit is not None else cfg.profile.detector.norm
    model = detector.build_detector(name, num_classes, dataclasses.replace(cfg.profile.detector, norm=norm))
    checkpoint.unwrap(model).load_state_dict(state["model"])
    return model.eval()


def reevaluate(run_dir: Path, out: Path | None, val_ann: str | None, val_images: str | None, device_name: str,
               progress: bool = True) -> Path:
    """Evaluate every finished checkpoint of `run_dir` into a new run folder and render its report."""
    if (val_ann is None) != (val_images is None):
        raise UsageError("--val-ann and --val-images go together")
    cfg = configure.build(file=run_dir / "config.yaml")
    device = check_device(device_name)
    if val_ann is not None:
        cfg.data.val_ann, cfg.data.val_images = str(val_ann), str(val_images)
    source = data.make_synthetic(cfg.profile.synthetic, cfg.cache_dir) if cfg.data.synthetic else cfg.data
    split = data.load_split(val_ann or source.val_ann, val_images or source.val_images, None, strict=False,
                            keep_data=True)
    found = [(seed, name, run_dir / f"seed{seed}" / name) for seed in cfg.profile.seeds for name in cfg.backbones
             if (run_dir / f"seed{seed}" / name / checkpoint.CHECKPOINT_FILE).is_file()]
    if not found:
        raise UsageError(f"{run_dir} has no checkpoint to evaluate")
    out = fresh_dir(out, f"{run_dir.name}-evaluated")
    write_text(out / "config.yaml", configure.to_yaml(cfg))
    val_set = data.CocoDetection(split.index, split.image_dir, split.ann_path, train=False)
    coco_gt = data.ground_truth(split.data)
    for seed, name, folder in found:
        state = checkpoint.load(folder / checkpoint.CHECKPOINT_FILE)
        model = trained_detector(cfg, name, val_set.num_classes, state).to(device)
        target = out / f"seed{seed}" / name
        target.mkdir(parents=True)
        scores = evaluate_model(model, val_set, coco_gt, target, device, progress=progress,
                                desc=f"evaluate {name} seed {seed}")
        trained = evaluate.read_json(folder / "metrics.json").get("train") if (folder / "metrics.json").is_file() \
            else None
        write_json(target / "metrics.json", {"backbone": name, "seed": seed, **scores,
                                             "train": trained or {"iterations": state["iteration"], "seconds": None,
                                                                  "images_per_s": None, "final_loss": None}})
        if (folder / "loss.csv").is_file():
            shutil.copy2(folder / "loss.csv", target / "loss.csv")
    for file in COPIED:
        if (run_dir / file).is_file():
            shutil.copy2(run_dir / file, out / file)
    write_json(out / "sources.json", [{"path": str(run_dir), "evaluated_on": str(split.ann_path)}])
    return report.write_report(out)
