"""`python -m bench.pretrain`: ImageNet-style classification pretraining of any registered backbone.

    python -m bench.pretrain --backbones detnet59,resnet50 --profile cpu            # generated shapes
    torchrun --nproc_per_node=8 -m bench.pretrain --profile imagenet --data /data/imagenet --out runs/in1k

The run folder is what `bench.run --pretrained-dir` takes: `<backbone>.safetensors` at its top,
`classification.json` (top-1/top-k error, params, GMACs at 224, sha256 per backbone),
`sha256sums.txt`, `config.yaml`, `status.json`, and per backbone `epochs.csv` and its checkpoint.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import comm
from ..cli import (
    ArgumentParser,
    check_backbones,
    check_device,
    check_writable_dir,
    entry_point,
    fresh_dir,
    split_list,
)
from ..errors import UsageError
from ..files import set_status, write_json, write_text
from ..layout import PretrainLayout
from ..measure.compute import count_flops, count_params
from ..settings import first_difference
from ..train import StopRequest, TrainingStopped
from . import data, loop
from .config import PROFILES, PretrainConfig, build, to_dict, to_yaml
from .provenance import export_weights

GMACS_SIZE = 224  # the paper's (and timm's) resolution for a classifier's compute


def parse_args(argv: list[str] | None):
    parser = ArgumentParser(prog="python -m bench.pretrain",
                            description="Classification pretraining of detection backbones, for --pretrained-dir.")
    parser.add_argument("--backbones", help="comma-separated timm model names (default detnet59)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="recipe and sizes (default imagenet)")
    parser.add_argument("--data", help="ImageFolder tree with train/<class>/ and val/<class>/ (default: generated "
                                       "crops of the synthetic shapes)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--cache-dir", help="where the generated set is kept")
    parser.add_argument("--out", help="new or empty run folder (default results/pretrain-<date>-...)")
    parser.add_argument("--config", help="settings from a config.yaml, then the options given here")
    parser.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run in its own folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. recipe.epochs=3 (repeatable)")
    parser.add_argument("--stop-after", type=int, default=0, metavar="STEPS",
                        help="stop as on Ctrl-C after this many steps of this session (checkpoint, then --resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    return parser.parse_args(argv)


def config_from_args(args) -> PretrainConfig:
    if args.resume:
        if args.config or args.set or args.profile or args.backbones or args.data:
            raise UsageError("--resume continues the run as its config.yaml says; give no settings with it")
        return build(file=PretrainLayout(Path(args.resume)).config)
    options: dict[str, Any] = {}
    if args.backbones is not None:
        options["backbones"] = split_list(args.backbones)
    if args.data is not None:
        options["data_dir"] = args.data
    if args.cache_dir is not None:
        options["cache_dir"] = args.cache_dir
    if args.device is not None or args.config is None:
        options["device"] = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return build(args.profile, args.config, options, args.set)


@contextmanager
def data_parallel(device: torch.device) -> Iterator[tuple[torch.device, int, int, Callable[[nn.Module], nn.Module]]]:
    """Under torchrun (WORLD_SIZE > 1): one process group for the run (bench.comm), one GPU per process, and
    a `wrap` that makes a model DistributedDataParallel (SyncBatchNorm on CUDA); alone: the model as it is."""
    device = comm.init(device, timedelta(minutes=30))
    world = comm.world_size()
    if world == 1:
        yield device, 0, 1, lambda model: model
        return

    def wrap(model: nn.Module) -> nn.Module:
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
        return nn.parallel.DistributedDataParallel(synced, device_ids=[device] if device.type == "cuda" else None)

    try:
        yield device, comm.rank(), world, wrap
    finally:
        comm.destroy()


def prepare(args, cfg: PretrainConfig) -> tuple[Path, str]:
    """Every check before any work: backbones, device, data, folders. Returns the data root and its description."""
    check_backbones(cfg.backbones)
    check_device(cfg.device)
    world = comm.launched_world_size()
    if cfg.profile.recipe.batch_size % world:
        raise UsageError(f"batch size {cfg.profile.recipe.batch_size} does not split over {world} processes")
    if world > 1 and not (args.out or args.resume):
        raise UsageError("under torchrun give --out, so every process writes to the same run folder")
    out = Path(args.out) if args.out and not args.resume else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        # checked by every process before they meet, since only rank 0 creates the folder afterwards
        raise UsageError(f"{out} already exists and is not empty; earlier results are never overwritten")
    if cfg.data_dir is not None:
        return data.image_folder(cfg.data_dir), f"ImageFolder {cfg.data_dir}"
    check_writable_dir(Path(cfg.cache_dir), "--cache-dir")
    generated = cfg.profile.generated
    return (data.generated_set(generated, cfg.cache_dir),
            f"generated shape crops ({generated.num_train_images}+{generated.num_val_images} synthetic images)")


def check_resume(cfg: PretrainConfig, run_dir: Path) -> None:
    """Refuse a run folder whose config.yaml changed since one of its checkpoints was saved."""
    for path in PretrainLayout(run_dir).checkpoints():
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config")
        changed = first_difference(saved, to_dict(cfg))
        if changed:
            raise UsageError(f"{PretrainLayout(run_dir).config}: setting {changed} changed since {path} was saved")


def classification_entry(name: str, trained: loop.Trained, description: str, classes: list[str],
                         run_dir: Path, ema: bool) -> dict[str, Any]:
    """classification.json's record of one backbone: final errors, cost, and the exported weights' sha256."""
    model = trained.model.cpu().eval()
    final = trained.history[-1]
    flops = count_flops(model, torch.zeros(1, 3, GMACS_SIZE, GMACS_SIZE))
    weights = PretrainLayout(run_dir).weights(name)
    return {
        "backbone": name, "data": description, "classes": classes,
        "top1_err": final["top1_err"], "topk_err": final["topk_err"], "k": min(5, len(classes)),
        "val_loss": final["val_loss"], "epochs": final["epoch"], "steps": final["step"],
        "train_seconds": round(trained.seconds, 2),
        "params": count_params(model),
        "gmacs_224": round(flops.gmacs, 4),
        "gmacs_unit": (f"GMACs: 10^9 multiply-adds of one 3x{GMACS_SIZE}x{GMACS_SIZE} forward with the "
                       f"{len(classes)}-class head (torch FlopCounterMode FLOPs / 2, bench.measure.compute)"),
        "weights_file": weights.name, "weights_sha256": export_weights(model, weights),
        "weights_are": "EMA of the weights (recipe.ema_decay)" if ema else "the final weights",
    }


def run(args, cfg: PretrainConfig, stop: StopRequest) -> Path:
    """Pretrain every backbone in turn into one run folder; a finished backbone is skipped on --resume."""
    root, description = prepare(args, cfg)
    with data_parallel(torch.device(cfg.device)) as (device, rank, world, wrap):
        if args.resume:
            run_dir = Path(args.resume)
            check_resume(cfg, run_dir)
        elif rank == 0:
            run_dir = fresh_dir(args.out, f"pretrain-{cfg.profile.name}-{'-'.join(cfg.backbones)}")
            write_text(PretrainLayout(run_dir).config, to_yaml(cfg))
        else:
            run_dir = Path(args.out)
        layout = PretrainLayout(run_dir)
        status = (lambda *a, **k: set_status(layout.status, *a, **k)) if rank == 0 else (lambda *a, **k: None)
        status("running")
        train_images, val_images = data.datasets(root)
        train_transform, eval_transform = data.transforms(cfg.profile.input)
        sets = (data.SeededSamples(train_images, train_transform, cfg.profile.seed),
                data.SeededSamples(val_images, eval_transform, cfg.profile.seed))
        classes = list(train_images.reader.class_to_idx)
        record_path = layout.classification
        records = json.loads(record_path.read_text()) if record_path.is_file() else {}
        try:
            for name in cfg.backbones:
                if name in records:
                    continue
                stop.check(f"pretraining {name}")
                if rank == 0:  # the only process that writes
                    layout.backbone_dir(name).mkdir(exist_ok=True)
                trained = loop.train_backbone(name, cfg, sets, layout, device, wrap, rank, world, stop,
                                              resume=bool(args.resume), stop_after=args.stop_after,
                                              show=not args.no_progress)
                if rank == 0:
                    records[name] = classification_entry(name, trained, description, classes, run_dir,
                                                         cfg.profile.recipe.ema_decay > 0)
                    write_json(record_path, records)
                    write_text(layout.sha256sums, "".join(f"{r['weights_sha256']}  {r['weights_file']}\n"
                                                           for r in records.values()))
                    print(f"{name}: top-1 error {records[name]['top1_err']:.1f}% on {description}, "
                          f"{records[name]['train_seconds'] / 60:.1f} min; weights {run_dir / records[name]['weights_file']}",
                          flush=True)
        except (TrainingStopped, KeyboardInterrupt) as err:
            status("interrupted", str(err) or "KeyboardInterrupt", resume=f"python -m bench.pretrain --resume {run_dir}")
            raise
        except BaseException as err:
            status("failed", f"{type(err).__name__}: {err}", resume=f"python -m bench.pretrain --resume {run_dir}")
            raise
        status("finished")
    return run_dir


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stop_after < 0:
        raise UsageError(f"--stop-after must be >= 0, got {args.stop_after}")
    cfg = config_from_args(args)
    try:
        with StopRequest() as stop:
            run_dir = run(args, cfg, stop)
    except (TrainingStopped, KeyboardInterrupt) as err:
        print(f"\ninterrupted: {str(err) or 'Ctrl-C'}; `python -m bench.pretrain --resume <run folder>` goes on",
              file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"pretraining run: {run_dir}; use it with python -m bench.run --pretrained-dir {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
