"""Training: SGD with momentum, linear warm-up, step decay, as the paper; AMP on CUDA.

The learning rate scales linearly with the batch (`base_lr * batch / base_batch`), so a
profile with a smaller batch keeps the paper's effective step size. Losses go to
`loss.csv` every `log_every` iterations (window means), a checkpoint every
`checkpoint_every` iterations and at the end.
"""
from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import TrainConfig

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
LOSS_COLUMNS = ("iteration", "lr", "loss", *LOSS_NAMES, "images_per_s", "elapsed_s")


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite; the message says at which iteration."""


@dataclass
class TrainResult:
    iterations: int  # run in this call (fewer than the schedule's when resumed)
    seconds: float
    images_per_s: float  # over all processes
    final_loss: float


def scaled_lr(cfg: TrainConfig) -> float:
    return cfg.base_lr * cfg.batch_size / cfg.base_batch


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=scaled_lr(cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from `warmup_factor` times the lr, then x`lr_gamma` at each step."""
    milestones = sorted({round(f * cfg.iterations) for f in cfg.lr_steps})
    warmup = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=cfg.warmup_factor if cfg.warmup_iters else 1.0, total_iters=max(cfg.warmup_iters, 1)
    )
    decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.ChainedScheduler([warmup, decay])


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.amp and device.type == "cuda"


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: list[torch.Tensor],
    targets: list[dict],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One SGD step: losses (under fp16 autocast when the scaler is on), backward, update."""
    device_type = images[0].device.type
    with torch.autocast(device_type, enabled=scaler.is_enabled()):
        losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), losses


def endless(loader: DataLoader) -> Iterator:
    """Iterate epochs back to back; a DistributedSampler gets a new epoch each pass."""
    epoch = 0
    while True:
        sampler = getattr(loader, "batch_sampler", None)
        sampler = getattr(sampler, "sampler", sampler)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    progress: bool = True,
    desc: str = "train",
    resume: bool = False,
) -> TrainResult:
    """Train `model` for `cfg.iterations`; rank 0 writes `loss.csv` and `checkpoint.pth` into `out_dir`.

    With `resume`, training continues from `out_dir/checkpoint.pth` when there is one (model,
    optimizer, schedule and loss scale; the data order restarts with a new epoch).
    """
    checkpoint = Path(out_dir) / "checkpoint.pth"
    world = dist.get_world_size() if dist.is_initialized() else 1
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_enabled(cfg, device))
    done = load_checkpoint(checkpoint, model, optimizer, scheduler, scaler) if resume and checkpoint.is_file() else 0
    model.train()

    writer = LossLog(checkpoint.with_name("loss.csv"), append=done > 0) if is_main else None
    window: list[dict[str, float]] = []
    images_seen, start = 0, time.perf_counter()
    bar = tqdm(total=cfg.iterations, initial=done, desc=desc, disable=not (progress and is_main), dynamic_ncols=True)
    batches = endless(loader)
    loss = torch.tensor(float("nan"))
    for iteration in range(done + 1, cfg.iterations + 1):
        images, targets = next(batches)
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        lr = optimizer.param_groups[0]["lr"]
        loss, losses = train_step(model, optimizer, scaler, images, targets)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"{desc}: loss became {loss.item()} at iteration {iteration}")
        scheduler.step()

        images_seen += len(images) * world  # every process trains on its own share of the batch
        elapsed = time.perf_counter() - start
        window.append({"loss": loss.item(), **{k: v.item() for k, v in losses.items()}})
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{images_seen / elapsed:.2f}")
        if writer and (iteration % cfg.log_every == 0 or iteration == cfg.iterations):
            means = {k: sum(row[k] for row in window) / len(window) for k in window[0]}
            writer.write(iteration=iteration, lr=lr, images_per_s=images_seen / elapsed, elapsed_s=elapsed, **means)
            window.clear()
        if is_main and cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer, scheduler, scaler, iteration)
    bar.close()

    seconds = time.perf_counter() - start
    if is_main:
        save_checkpoint(checkpoint, model, optimizer, scheduler, scaler, cfg.iterations)
        writer.close()
    return TrainResult(cfg.iterations - done, seconds, images_seen / max(seconds, 1e-9), loss.item())


class LossLog:
    """CSV of window-mean losses, flushed per row so a crash keeps the curve."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.file = path.open("a" if append else "w", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=LOSS_COLUMNS, extrasaction="ignore")
        if not append:
            self.csv.writeheader()

    def write(self, **row: float) -> None:
        self.csv.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    iteration: int,
) -> None:
    """Everything training needs to go on; written atomically, so an interrupted save never truncates it."""
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> int:
    """Restore a `save_checkpoint` file; returns the iterations it had done."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return int(state["iteration"])
