"""One backbone's classification training, from timm's parts: optimizer, schedule, mixup, losses, EMA, accuracy.

What is ours is the order of the steps and what a bench.run-style run needs around them:
`epochs.csv` per epoch, checkpoints that resume bit-exactly (`bench.checkpoint`, RNG states
included, with the EMA weights and the epoch's running loss), a stop request honoured after a
whole step, and the finished weights.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
import timm
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, accuracy, random_seed
from torch import nn
from torch.utils.data import DataLoader

from .. import checkpoint, comm
from ..errors import DataError, UsageError
from ..files import write_csv
from ..layout import PretrainLayout
from ..progress import progress as progress_bar
from ..train import StopRequest, TrainingDiverged, TrainingStopped
from . import data
from .config import PretrainConfig, RecipeConfig, to_dict

EVAL_BATCH = 64


@dataclass
class Trained:
    """What a finished (or resumed-to-the-end) backbone hands to the run folder."""

    model: nn.Module  # the weights to export: the EMA's when EMA is on
    history: list[dict[str, Any]]
    seconds: float


def criterion(recipe: RecipeConfig, mixing: bool) -> nn.Module:
    """timm's losses: soft targets under mixup/cutmix (which smooth the labels themselves), else label smoothing."""
    if mixing:
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(recipe.smoothing) if recipe.smoothing else nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, k: int = 5) -> dict[str, float]:
    """Top-1 and top-k error (%) and the mean cross-entropy over every sample, from timm's `accuracy`."""
    model.eval()
    correct1 = correctk = count = 0
    loss = 0.0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images).float()
        top1, topk = accuracy(logits, targets, topk=(1, k))
        n = targets.numel()
        correct1 += round(top1.item() * n / 100)  # timm gives percent in float32: back to the exact count
        correctk += round(topk.item() * n / 100)
        loss += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        count += n
    return {"val_loss": loss / count, "top1_err": 100 - 100 * correct1 / count, "topk_err": 100 - 100 * correctk / count}


def train_backbone(name: str, cfg: PretrainConfig, sets: tuple[data.SeededSamples, data.SeededSamples],
                   layout: PretrainLayout, device: torch.device, wrap: Callable[[nn.Module], nn.Module], rank: int,
                   world: int, stop: StopRequest, resume: bool, stop_after: int = 0, show: bool = True) -> Trained:
    """Train `name` as the profile says into its folder of `layout` (checkpoint, epochs.csv); resume from its
    checkpoint."""
    recipe, train_set, val_set = cfg.profile.recipe, *sets
    num_classes = len(train_set.images.reader.class_to_idx)
    per_epoch = len(train_set) // recipe.batch_size
    if per_epoch == 0:
        raise DataError(f"{len(train_set)} training images make no full batch of {recipe.batch_size}")
    mixing = recipe.mixup > 0 or recipe.cutmix > 0
    if mixing and (recipe.batch_size // world) % 2:
        raise UsageError(f"mixup/cutmix need an even batch per process, got {recipe.batch_size // world}")
    random_seed(cfg.profile.seed, rank)  # timm's: Python, NumPy (mixup draws from it) and torch, per process
    model = timm.create_model(name, num_classes=num_classes).to(device)
    trained = wrap(model)
    optimizer = create_optimizer_v2(model, opt=recipe.opt, lr=recipe.base_lr * recipe.batch_size / recipe.base_batch,
                                    weight_decay=recipe.weight_decay, momentum=recipe.momentum,
                                    filter_bias_and_bn=recipe.filter_bias_and_bn)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=recipe.epochs, decay_milestones=list(recipe.decay_milestones),
        decay_rate=recipe.decay_rate, min_lr=recipe.min_lr, warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs, step_on_epochs=False, updates_per_epoch=per_epoch)
    ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema_decay else None
    mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.smoothing,
                  num_classes=num_classes) if mixing else None
    loss_fn = criterion(recipe, mixing)
    scaler = torch.amp.GradScaler(enabled=False)  # bf16 needs none; kept for bench.checkpoint's format
    step, history, running, seconds = 0, [], [0.0, 0], 0.0
    path = layout.checkpoint(name)
    if resume and path.is_file():
        state = checkpoint.load(path)
        step = checkpoint.restore(state, trained, optimizer, scheduler, scaler)
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, running, seconds = state["history"], state["running"], state["seconds"]

    def save() -> None:  # every process: each gives its RNG states, rank 0 writes
        checkpoint.save(path, step, trained, optimizer, scheduler, scaler, to_dict(cfg), {
            "ema": ema.state_dict() if ema is not None else None, "history": history,
            "running": running, "seconds": seconds})

    total = recipe.epochs * per_epoch
    loader, _ = data.train_loader(train_set, recipe.batch_size, cfg.profile.input.workers, step, rank, world)
    val_loader = data.eval_loader(val_set, EVAL_BATCH, cfg.profile.input.workers)
    autocast = torch.autocast(device.type, torch.bfloat16) if recipe.precision == "bf16" else nullcontext()
    trained.train()
    started, session_start = time.perf_counter(), step
    with progress_bar(total, f"pretrain {name}", enabled=show and rank == 0, initial=step) as bar:
        for images, targets in loader:
            if step >= total:
                break
            images, targets = images.to(device), targets.to(device)
            if mixup is not None:
                images, targets = mixup(images, targets)
            with autocast:
                loss = loss_fn(trained(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(f"{name}: loss {loss.item()} at step {step + 1}")
            optimizer.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            scheduler.step_update(num_updates=step)
            running = [running[0] + loss.item() * len(images), running[1] + len(images)]
            bar.update(1)
            if step % recipe.log_every == 0:
                bar.set_postfix(loss=f"{running[0] / running[1]:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
            if step % per_epoch == 0:
                seconds += time.perf_counter() - started
                started = time.perf_counter()
                if rank == 0:
                    history.append(_epoch_row(step // per_epoch, step, optimizer, running, seconds,
                                              evaluate(ema.module if ema else model, val_loader, device,
                                                       min(5, num_classes))))
                    write_csv(layout.epochs(name), pd.DataFrame(history))
                trained.train()
                running = [0.0, 0]
                scheduler.step(step // per_epoch)
            wanted = comm.agree(stop.requested, failure=0)[0] or (stop_after and step - session_start >= stop_after)
            if wanted or step == total or (recipe.checkpoint_every and step % recipe.checkpoint_every == 0):
                seconds += time.perf_counter() - started
                started = time.perf_counter()
                save()
            if wanted and step < total:
                raise TrainingStopped(f"stopped by {stop.name or '--stop-after'} after step {step} of {total}; "
                                      f"checkpoint saved in {path}")
    return Trained(ema.module if ema is not None else model, history, seconds)


def _epoch_row(epoch: int, step: int, optimizer: torch.optim.Optimizer, running: list, seconds: float,
               scores: dict[str, float]) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
            "train_loss": running[0] / max(running[1], 1), **scores, "elapsed_s": round(seconds, 2)}

