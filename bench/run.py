"""`python -m bench.run`: data -> detector -> train -> evaluate -> measure -> report, per backbone.

Every backbone gets the same data, detector settings, schedule and seed; the run folder
holds everything needed to read and to repeat the run (see README, "The run folder").
Under `torchrun`, training is data-parallel; evaluation, measurement and writing happen
on rank 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import timm
import torch
import torch.distributed as dist
import yaml

from backbones import WeightsError

from . import data, detector, evaluate, measure, report, train
from .config import PROFILES, DataSource, RunConfig, get_profile

METRICS_FILE = "metrics.csv"


class UsageError(ValueError):
    """A mistake in the command line or its files: reported in one line, exit code 2."""


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
    parser.add_argument("--out", help="run folder (default results/<timestamp>-<backbones>/); must not hold files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--pretrained-dir", help="folder of local ImageNet weights, <backbone>.pth/.safetensors")
    parser.add_argument("--config", help="re-run from a run folder's config.yaml (other options are ignored)")
    parser.add_argument("--cache-dir", default=".cache/detbench", help="where the synthetic set is generated")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if args.config:
        try:
            return RunConfig.from_dict(yaml.safe_load(Path(args.config).read_text()))
        except (OSError, yaml.YAMLError, TypeError, ValueError) as err:
            raise UsageError(f"cannot read {args.config}: {err}") from None
    backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]
    return RunConfig(
        backbones=backbones,
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
    """Catch user mistakes before any long work starts."""
    if not cfg.backbones:
        raise UsageError("--backbones is empty")
    unknown = [name for name in cfg.backbones if not timm.is_model(name)]
    if unknown:
        raise UsageError(f"unknown backbone {unknown[0]!r}; try detnet59, resnet50, resnet101 or any timm model")
    if len(set(cfg.backbones)) != len(cfg.backbones):
        raise UsageError("a backbone is listed twice in --backbones")
    device = torch.device(cfg.device)  # raises on nonsense such as "gpu"
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but this machine has no CUDA device")
    if not cfg.data.synthetic:
        data.check_source(cfg.data)
    for name in cfg.backbones:
        pretrained_file(cfg, name)


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


def make_run_dir(cfg: RunConfig, out: str | None) -> Path:
    """A fresh folder: an existing one with files in it is refused, never overwritten."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("results") / f"{stamp}-{cfg.profile.name}-{'-'.join(cfg.backbones)}"
    run_dir = Path(out)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"{run_dir} already exists and is not empty; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def init_distributed(cfg: RunConfig) -> tuple[torch.device, int, int]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one GPU per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return torch.device(cfg.device), 0, 1
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.profile.train.batch_size % world:
        raise UsageError(f"batch size {cfg.profile.train.batch_size} does not split over {world} processes")
    return device, dist.get_rank(), world


def run_backbone(
    name: str,
    cfg: RunConfig,
    datasets: tuple[data.CocoDetection, data.CocoDetection],
    run_dir: Path,
    device: torch.device,
    rank: int,
    world: int,
    progress: bool,
) -> dict:
    """Train and evaluate one backbone; returns its metrics (rank 0) and writes its folder."""
    train_set, val_set = datasets
    out_dir = run_dir / name
    if rank == 0:
        out_dir.mkdir(exist_ok=True)
    torch.manual_seed(cfg.seed)  # same head init and data order for every backbone
    model = detector.build_detector(name, train_set.num_classes, cfg.profile.detector, pretrained_file(cfg, name))
    model.to(device)
    torch.manual_seed(cfg.seed)  # and the same flips, whatever the model's init drew
    per_process_batch = cfg.profile.train.batch_size // world
    loader = data.build_train_loader(
        train_set, per_process_batch, cfg.seed, cfg.profile.train.workers, distributed=world > 1
    )
    trained = model
    if world > 1:
        if device.type == "cuda":  # batch statistics over all GPUs, as the paper's from-scratch setting needs
            trained = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[device])
        else:
            trained = torch.nn.parallel.DistributedDataParallel(model)
    result = train.train(
        trained, loader, cfg.profile.train, out_dir, device, progress=progress, desc=f"train {name}", is_main=rank == 0
    )
    if rank != 0:
        return {}
    start = time.perf_counter()
    val_loader = data.build_eval_loader(val_set, batch_size=2, workers=cfg.profile.train.workers)
    detections = evaluate.predict(model, val_loader, val_set.label_to_category_id, device, progress=progress)
    (out_dir / "detections.json").write_text(json.dumps(detections))
    scores = evaluate.evaluate_detections(val_set.coco, detections)
    metrics = {
        "backbone": name,
        **scores.to_dict(),
        "train": {
            "iterations": result.iterations,
            "seconds": round(result.seconds, 2),
            "images_per_s": round(result.images_per_s, 3),
            "final_loss": result.final_loss,
        },
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def metrics_row(metrics: dict) -> dict:
    return {
        "backbone": metrics["backbone"],
        **metrics["stats"],
        "train_seconds": metrics["train"]["seconds"],
        "train_images_per_s": metrics["train"]["images_per_s"],
        "eval_seconds": metrics["eval_seconds"],
    }


def execute(cfg: RunConfig, run_dir: Path, progress: bool) -> None:
    device, rank, world = init_distributed(cfg)
    source = data.make_synthetic(cfg.profile.synthetic, cfg.cache_dir) if cfg.data.synthetic else cfg.data
    hflip = cfg.profile.train.hflip
    datasets = (
        data.CocoDetection(source.train_ann, source.train_images, train=True, hflip=hflip),
        data.CocoDetection(source.val_ann, source.val_images, train=False),
    )
    rows = []
    for name in cfg.backbones:
        metrics = run_backbone(name, cfg, datasets, run_dir, device, rank, world, progress)
        if rank == 0:
            rows.append(metrics_row(metrics))
            pd.DataFrame(rows).to_csv(run_dir / METRICS_FILE, index=False)  # kept current after each backbone
    if rank == 0:
        measure.measure(cfg.backbones, cfg.profile, device, run_dir, datasets[0].num_classes, progress=progress)
        report.write_report(run_dir)
    if world > 1:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        validate(cfg)
        is_main = int(os.environ.get("RANK", "0")) == 0
        run_dir = make_run_dir(cfg, args.out) if is_main else Path(args.out or "")
        if is_main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    except (UsageError, data.DataError, WeightsError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        execute(cfg, run_dir, progress=not args.no_progress)
    except (WeightsError, data.DataError, train.TrainingDiverged) as err:
        print(f"error: {err} (results so far are in {run_dir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted (results so far are in {run_dir})", file=sys.stderr)
        return 130
    if is_main:
        minutes = (time.perf_counter() - start) / 60
        accuracy = report.build_tables(report.load_run(run_dir))["accuracy"]
        print(f"\n{accuracy.title}\n\n{accuracy.to_markdown()}\n")
        print(f"{cfg.profile.name} profile, {len(cfg.backbones)} backbone(s), {minutes:.1f} min; report: {run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
