"""Training checkpoints that resume bit-exactly: model, optimizer, schedule, loss scale, RNGs, position.

The data pipeline keeps no state to save (batches and flips are functions of seed, epoch and
index), so the iteration count is the sampler's position. What the model draws at random
(anchor and RoI sampling) comes from the global generators, saved here for every process of a
torchrun job (each draws its own samples), so that rank r resumes from its own. Checkpoints hold
tensors and plain values only and load with `weights_only=True`: no pickled code runs.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import comm
from .files import atomic_write


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU and every CUDA device) generators, as tensors and numbers."""
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, torch.tensor(keys, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(np_keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys.tolist()), gauss))
    kind, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np_keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, iteration: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
         config: dict[str, Any], extra: dict[str, Any]) -> None:
    """Everything training needs to go on from `iteration`, written atomically by rank 0; every process
    calls it, since each gives its RNG states."""
    rng = comm.gather_object(rng_state())
    if rng is None:
        return
    state = {
        "iteration": iteration,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,  # one entry per rank
        "config": config,  # the run's settings, so --resume can refuse a changed config.yaml
        **extra,
    }
    atomic_write(path, lambda file: torch.save(state, file))


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def continuable(state: dict[str, Any]) -> bool:
    """Whether training can go on from `state` bit-exactly: detbench's first checkpoints (config.yaml
    version 1) hold no RNG states, and an optimizer of one parameter group where today's has two."""
    return "rng" in state


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> int:
    """Put a `save`d state back, this process's RNGs included; returns the iterations it had done.

    A checkpoint from before per-rank states holds one (rank 0's), and every process gets it."""
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    states = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    set_rng_state(states[comm.rank()] if comm.rank() < len(states) else states[0])
    return int(state["iteration"])
