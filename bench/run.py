"""`python -m bench.run`: data -> detector -> train -> evaluate -> measure -> report, per backbone.

Every backbone gets the same data, detector settings, schedule and seed; the run folder
holds everything needed to read and to repeat the run (see README, "What you get").
Under `torchrun`, training is data-parallel; evaluation, measurement and writing happen
on rank 0 while the other processes wait.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
import yaml

from backbones import WeightsError, create_backbone

from . import data, detector, evaluate, measure, report, train
from .cli import UsageError, check_backbones, check_device, fresh_dir, parse_backbones
from .config import PROFILES, DataSource, RunConfig, get_profile

CONFIG_FILE, METRICS_FILE = "config.yaml", "metrics.csv"
# Rank 0 evaluates (COCO val: minutes) while the others wait in the next collective.
COLLECTIVE_TIMEOUT = timedelta(hours=3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Train and evaluate Faster R-CNN + FPN on several backbones under identical settings.",
    )
    parser.add_argument("--backbones", default="detnet59,resnet50", help="comma-separated timm model names")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES), help="schedule and sizes")
    parser.add_argument("--data", help="COCO 2017 folder (annotations/, train2017/, val2017/)")
    parser.add_argument("--train-ann", help="any COCO-format training annotation file")
    parser.add_argument("--train-images", help="folder of the training images")
    parser.add_argument("--val-ann", help="COCO-format validation annotation file")
    parser.add_argument("--val-images", help="folder of the validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--pretrained-dir", help="folder of local ImageNet weights, <backbone>.pth/.safetensors")
    parser.add_argument("--cache-dir", default=".cache/detbench", help="where the synthetic set is generated")
    parser.add_argument(
        "--out", help="new or empty run folder (default results/<date>-<time>-<profile>-s<seed>-<backbones>)"
    )
    parser.add_argument("--config", help="repeat a run: its config.yaml replaces the options above but --out")
    parser.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run in its own folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def read_config(path: Path) -> RunConfig:
    try:
        return RunConfig.from_dict(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, TypeError, ValueError, AttributeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if args.resume:
        return read_config(Path(args.resume) / CONFIG_FILE)
    if args.config:
        return read_config(Path(args.config))
    return RunConfig(
        backbones=parse_backbones(args.backbones),
        profile=get_profile(args.profile),
        data=data_source(args),
        seed=args.seed,
        device=args.device,
        pretrained_dir=args.pretrained_dir,
        cache_dir=args.cache_dir,
    )


def data_source(args: argparse.Namespace) -> DataSource:
    explicit = [args.train_ann, args.train_images, args.val_ann, args.val_images]
    if args.data and any(explicit):
        raise UsageError("give either --data or --train-ann/--train-images/--val-ann/--val-images, not both")
    if args.data:
        return data.coco_layout(args.data)
    if any(explicit) and not all(explicit):
        raise UsageError("--train-ann, --train-images, --val-ann and --val-images go together")
    return DataSource(*explicit)


def validate(cfg: RunConfig) -> None:
    """Catch user mistakes in seconds, before any long work starts."""
    check_backbones(cfg.backbones)
    check_device(cfg.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.profile.train.batch_size % world:
        raise UsageError(f"batch size {cfg.profile.train.batch_size} does not split over {world} processes")
    if not cfg.data.synthetic:
        data.check_source(cfg.data)
    for name in cfg.backbones:
        create_backbone(name, pretrained_file(cfg, name))  # unknown layouts and unfit weights fail here


def pretrained_file(cfg: RunConfig, backbone: str) -> Path | None:
    if cfg.pretrained_dir is None:
        return None
    folder = Path(cfg.pretrained_dir)
    if not folder.is_dir():
        raise UsageError(f"--pretrained-dir {folder} is not a folder")
    found = [folder / f"{backbone}{ext}" for ext in (".safetensors", ".pth") if (folder / f"{backbone}{ext}").is_file()]
    if not found:
        raise UsageError(f"no {backbone}.safetensors or {backbone}.pth in {folder}")
    return found[0]


def init_distributed(cfg: RunConfig) -> tuple[torch.device, int, int]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one GPU per process."""
    device = torch.device(cfg.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return device, 0, 1
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return device, dist.get_rank(), world


def run_backbone(
    name: str,
    cfg: RunConfig,
    datasets: tuple[data.CocoDetection, data.CocoDetection],
    run_dir: Path,
    device: torch.device,
    progress: bool,
    resume: bool,
) -> dict[str, Any] | None:
    """Train and evaluate one backbone; rank 0 writes its folder and returns its metrics."""
    train_set, val_set = datasets
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    out_dir = run_dir / name
    if rank == 0:
        out_dir.mkdir(exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = detector.build_detector(name, train_set.num_classes, cfg.profile.detector, pretrained_file(cfg, name))
    model.to(device)
    torch.manual_seed(cfg.seed)  # the same flips and RoI sampling draws for every backbone, whatever its init used
    loader = data.build_train_loader(
        train_set, cfg.profile.train.batch_size // world, cfg.seed, cfg.profile.train.workers, distributed=world > 1
    )
    trained = model
    if world > 1:
        if device.type == "cuda":  # batch statistics over all GPUs, as training BatchNorm from scratch needs
            trained = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[device] if device.type == "cuda" else None)
    result = train.train(
        trained, loader, cfg.profile.train, out_dir, device, progress=progress, desc=f"train {name}", resume=resume
    )
    if rank != 0:
        return None
    start = time.perf_counter()
    val_loader = data.build_eval_loader(val_set, batch_size=2, workers=cfg.profile.train.workers)
    detections = evaluate.predict(model, val_loader, val_set.label_to_category_id, device, progress=progress)
    (out_dir / "detections.json").write_text(json.dumps(detections))
    scores = evaluate.evaluate_detections(val_set.coco, detections)
    metrics = {
        "backbone": name,
        **scores.to_dict(),
        "train": {
            "iterations": cfg.profile.train.iterations,
            "seconds": round(result.seconds, 2),
            "images_per_s": round(result.images_per_s, 3),
            "final_loss": result.final_loss,
        },
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def metrics_row(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "backbone": metrics["backbone"],
        **metrics["stats"],
        "train_seconds": metrics["train"]["seconds"],
        "train_images_per_s": metrics["train"]["images_per_s"],
        "eval_seconds": metrics["eval_seconds"],
    }


def finished_metrics(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = run_dir / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def execute(cfg: RunConfig, run_dir: Path, progress: bool, resume: bool) -> None:
    device, rank, world = init_distributed(cfg)
    source = data.make_synthetic(cfg.profile.synthetic, cfg.cache_dir) if cfg.data.synthetic else cfg.data
    datasets = (
        data.CocoDetection(source.train_ann, source.train_images, train=True, hflip=cfg.profile.train.hflip),
        data.CocoDetection(source.val_ann, source.val_images, train=False),
    )
    rows = []
    for name in cfg.backbones:
        done = finished_metrics(run_dir, name) if resume else None
        metrics = done or run_backbone(name, cfg, datasets, run_dir, device, progress, resume)
        if rank == 0:
            rows.append(metrics_row(metrics))
            pd.DataFrame(rows).to_csv(run_dir / METRICS_FILE, index=False)  # kept current after each backbone
            stats, trained = metrics["stats"], metrics["train"]
            print(f"{name}: {trained['iterations']} iterations in {trained['seconds'] / 60:.1f} min, "
                  f"AP {100 * stats['AP']:.1f}, AP50 {100 * stats['AP50']:.1f}", flush=True)
    if rank == 0:
        measure.measure(cfg.backbones, cfg.profile, device, run_dir, datasets[0].num_classes, progress=progress)
        report.write_report(run_dir)
    if world > 1:
        dist.destroy_process_group()


def prepare(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """Config, checks and the run folder (rank 0 creates it and writes config.yaml)."""
    cfg = config_from_args(args)
    validate(cfg)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if args.resume:
        return cfg, Path(args.resume)
    if not is_main:
        return cfg, Path(args.out or "")  # only rank 0 writes
    run_dir = fresh_dir(args.out, f"{cfg.profile.name}-s{cfg.seed}-{'-'.join(cfg.backbones)}")
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return cfg, run_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, run_dir = prepare(args)
    except (UsageError, data.DataError, WeightsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        execute(cfg, run_dir, progress=not args.no_progress, resume=bool(args.resume))
    except (data.DataError, train.TrainingDiverged) as err:
        print(f"error: {err} (results so far are in {run_dir}; --resume {run_dir} goes on)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: results so far are in {run_dir}; --resume {run_dir} goes on", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        minutes = (time.perf_counter() - start) / 60
        accuracy = report.build_tables(report.load_run(run_dir))["accuracy"]
        print(f"\n{accuracy.title}\n\n{accuracy.to_markdown()}\n")
        print(f"{cfg.profile.name} profile, {len(cfg.backbones)} backbone(s), {minutes:.1f} min; report: {run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
