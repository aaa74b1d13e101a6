"""A trained detector's evaluation pass into its folder, and `bench.evaluate --run`: the same pass on saved checkpoints.

The pass writes everything a report reads about accuracy and its mechanism into one
backbone-seed folder: detections.json, metrics.json's scores, evaluation.npz (per-image
matches for the bootstrap) and analysis.json (every other evaluator's numbers: error breakdown,
proposal recall, RoI levels). `reevaluate` runs it on a finished run's checkpoints, on the run's
own validation set or another COCO-format one, into a new folder with the same tables and
report, without training.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO

from .. import checkpoint, comm, data, detector, report, settings
from ..checks import check_device, fresh_dir
from ..errors import UsageError
from ..files import read_json, write_json, write_text
from ..layout import ResultFiles, RunLayout
from ..settings import RunConfig
from .evaluator import Evaluator, Evaluators, inference_on_dataset
from .evaluators import BOX_SCORES, CocoEvaluator, ErrorBreakdownEvaluator, ImageMatchesEvaluator, ProposalEvaluator


def pass_evaluators(val_set: data.CocoDetection, coco_gt: COCO | None, files: ResultFiles) -> list[Evaluator]:
    """What the evaluation pass computes: the box scores first (the others read them), then analysis.json's
    parts in the file's order. A new metric of the pass is one more evaluator here."""
    boxes = CocoEvaluator(coco_gt, val_set.label_to_category_id, files.detections)
    return [boxes, ImageMatchesEvaluator(boxes, files.evaluation), ErrorBreakdownEvaluator(boxes),
            ProposalEvaluator(coco_gt)]


def evaluate_model(model: torch.nn.Module, val_set: data.CocoDetection, coco_gt: COCO | None, files: ResultFiles,
                   device: torch.device, batch_size: int = 2, workers: int = 0, progress: bool = True,
                   desc: str = "evaluate") -> dict[str, Any] | None:
    """Predict the validation set once into `pass_evaluators`; returns metrics.json's evaluation part.

    Under torchrun every process predicts its shard of the images (rank, rank + world, ...) with
    rank 0's weights and buffers, and rank 0 gathers the shards in image order and computes the
    numbers once, so they equal a single process's exactly; the other ranks return None.
    """
    start = time.perf_counter()
    comm.broadcast_state(checkpoint.unwrap(model))
    loader = data.build_eval_loader(val_set, batch_size=batch_size, workers=workers, rank=comm.rank(),
                                    world=comm.world_size())
    results = inference_on_dataset(model, loader, Evaluators(pass_evaluators(val_set, coco_gt, files)), device,
                                   progress=progress and comm.is_main(), desc=desc)
    if results is None:
        return None
    scores = results.pop(BOX_SCORES)
    write_json(files.analysis, results)
    return {**scores, "eval_seconds": round(time.perf_counter() - start, 2)}


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
    saved = settings.load_run_config(run_dir)
    source_layout, cfg = saved.layout, saved.config
    device = check_device(device_name)
    if val_ann is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_ann=str(val_ann),
                                                                val_images=str(val_images)))
    source = data.make_synthetic(cfg.profile.synthetic, cfg.cache_dir) if cfg.data.synthetic else cfg.data
    split = data.load_split(val_ann or source.val_ann, val_images or source.val_images, None, strict=False,
                            keep_data=True)
    found = [(seed, name, source_layout.result(name, seed)) for seed in cfg.profile.seeds for name in cfg.backbones
             if source_layout.result(name, seed).checkpoint.is_file()]
    if not found:
        raise UsageError(f"{run_dir} has no checkpoint to evaluate")
    out = fresh_dir(out, f"{run_dir.name}-evaluated")
    layout = RunLayout(out)
    write_text(layout.config, settings.to_yaml(cfg))
    val_set = data.CocoDetection(split.index, split.image_dir, split.ann_path, train=False)
    coco_gt = data.ground_truth(split.data)
    for seed, name, source in found:
        state = checkpoint.load(source.checkpoint)
        model = trained_detector(cfg, name, val_set.num_classes, state).to(device)
        target = layout.result(name, seed)
        target.folder.mkdir(parents=True)
        scores = evaluate_model(model, val_set, coco_gt, target, device, progress=progress,
                                desc=f"evaluate {name} seed {seed}")
        trained = read_json(source.metrics).get("train") if source.metrics.is_file() else None
        write_json(target.metrics, {"backbone": name, "seed": seed, **scores,
                                             "train": trained or {"iterations": state["iteration"], "seconds": None,
                                                                  "images_per_s": None, "final_loss": None}})
        if source.loss.is_file():
            shutil.copy2(source.loss, target.loss)
    for kept, copy in zip(source_layout.measured(), layout.measured(), strict=True):
        if kept.is_file():
            shutil.copy2(kept, copy)
    write_json(layout.sources, [{"path": str(run_dir), "evaluated_on": str(split.ann_path)}])
    return report.write_report(out)
