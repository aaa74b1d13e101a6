"""`python -m bench.pretrain`: ImageNet-style classification pretraining of any registered backbone.

    python -m bench.pretrain --backbones detnet59,resnet50 --profile cpu            # generated shapes
    torchrun --nproc_per_node=8 -m bench.pretrain --profile imagenet --data /data/imagenet --out runs/in1k

The run folder is what `bench.run --pretrained-dir` takes: `<backbone>.safetensors` at its top,
`classification.json` (top-1/top-k error, params, GMACs at 224, sha256 per backbone),
`sha256sums.txt`, `config.yaml`, `status.json`, and per backbone `epochs.csv` and its checkpoint.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backbones import split_backbones

from .. import comm, logs
from ..checks import (
    check_backbones,
    check_batch_split,
    check_device,
    check_new_dir,
    check_writable_dir,
    default_device,
    fresh_dir,
)
from ..cli import ArgumentParser, entry_point
from ..errors import ExitStatus, UsageError
from ..files import set_status, write_json, write_text
from ..layout import PretrainLayout
from ..measure.compute import count_flops, count_params
from ..settings import first_difference
from ..train import StopRequest, TrainingStopped
from . import data, loop
from .config import PROFILES, PretrainConfig, build, to_dict, to_yaml
from .provenance import export_weights

GMACS_SIZE = 224  # the paper's (and timm's) resolution for a classifier's compute
log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def parse_args(argv: list[str] | None):
    parser = ArgumentParser(prog="python -m bench.pretrain",
                            description="Classification pretraining of detection backbones, for --pretrained-dir.")
    parser.add_backbones(default="detnet59")
    parser.add_profile(PROFILES, default="imagenet", what="recipe and sizes")
    parser.add_argument("--data", help="ImageFolder tree with train/<class>/ and val/<class>/ (default: generated "
                                       "crops of the synthetic shapes)")
    parser.add_device()
    parser.add_argument("--cache-dir", help="where the generated set is kept")
    parser.add_out(default="results/<date>-<time>-pretrain-<profile>-<backbones>", what="new or empty run folder")
    parser.add_config()
    parser.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run in its own folder")
    parser.add_set(example="recipe.epochs=3")
    parser.add_argument("--stop-after", type=int, default=0, metavar="STEPS",
                        help="stop as on Ctrl-C after this many steps of this session (checkpoint, then --resume)")
    parser.add_no_progress()
    return parser.parse_args(argv)


def config_from_args(args) -> PretrainConfig:
    if args.resume:
        if args.config or args.set or args.profile or args.backbones or args.data:
            raise UsageError("--resume continues the run as its config.yaml says; give no settings with it")
        return build(file=PretrainLayout(Path(args.resume)).config)
    options: dict[str, Any] = {}
    if args.backbones is not None:
        options["backbones"] = split_backbones(args.backbones)
    if args.data is not None:
        options["data_dir"] = args.data
    if args.cache_dir is not None:
        options["cache_dir"] = args.cache_dir
    if args.device is not None or args.config is None:
        options["device"] = args.device or default_device()
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
    check_batch_split(cfg.profile.recipe.batch_size, world)
    if world > 1 and not (args.out or args.resume):
        raise UsageError("under torchrun give --out, so every process writes to the same run folder")
    if args.out and not args.resume:
        check_new_dir(args.out)  # by every process before they meet, since only rank 0 creates the folder afterwards
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
        logs.attach_run_log(layout)  # rank 0's; appended to on --resume
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
                    log.info("%s: top-1 error %.1f%% on %s, %.1f min; weights %s", name, records[name]["top1_err"],
                             description, records[name]["train_seconds"] / 60, run_dir / records[name]["weights_file"])
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
        log.warning("\ninterrupted: %s; `python -m bench.pretrain --resume <run folder>` goes on", str(err) or "Ctrl-C")
        return ExitStatus.INTERRUPTED
    log.info("pretraining run: %s; use it with python -m bench.run --pretrained-dir %s", run_dir, run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
