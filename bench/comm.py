"""Every `torch.distributed` call of detbench, in one place (as detectron2's utils/comm.py).

Under `torchrun` the processes agree on rank, world size and what to do next through this
module only, so its rules hold everywhere: flags are reduced on the backend's own device
(NCCL has no CPU tensors: a CPU flag stops an NCCL run at its first step), and a collective
that fails because another process died becomes `RankLost`, one line, instead of a traceback.
`tests/test_comm.py` fails if another module of bench/ or backbones/ imports torch.distributed.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import ExitStatus, UserError


class RankLost(RuntimeError):
    """A collective failed: another process of the job died (killed, out of memory, node lost)."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes the run folder and scores."""
    return rank() == 0


def launched_world_size() -> int:
    """The world torchrun launched (its WORLD_SIZE), known before the process group starts."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """The rank torchrun gave the process (its RANK), known before the process group starts."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """The process's place on its node (torchrun's LOCAL_RANK): its GPU, and 0 for the node's first."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: torch.device, timeout: timedelta) -> torch.device:
    """Start the process group torchrun describes (NCCL on GPUs, one per process; gloo on the CPU) and
    return this process's device; one process starts nothing."""
    if launched_world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def flag_device() -> torch.device:
    """Where the backend reduces tensors: the current GPU under NCCL, the CPU otherwise."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(stop: bool, failure: int) -> tuple[bool, dict[int, int]]:
    """One reduction per training step: whether any process was asked to stop, and each process's
    `failure` code (0 for none) by rank, so every process stops after the same step with the same
    reason. One process reduces nothing."""
    world, me = world_size(), rank()
    values = [0.0] * (1 + world)
    values[0], values[1 + me] = float(stop), float(failure)
    if world > 1:
        flags = torch.tensor(values, device=flag_device())
        _collective(dist.all_reduce, flags, op=dist.ReduceOp.MAX)
        values = flags.tolist()
    return bool(values[0]), {r: int(code) for r, code in enumerate(values[1:]) if code}


def barrier() -> None:
    if world_size() > 1:
        _collective(dist.barrier)


def all_gather_object(item: Any) -> list[Any]:
    """Every process's `item`, in rank order, on every process."""
    if world_size() == 1:
        return [item]
    gathered: list[Any] = [None] * world_size()
    _collective(dist.all_gather_object, gathered, item)
    return gathered


def gather_object(item: Any) -> list[Any] | None:
    """Every process's `item` in rank order on rank 0; None elsewhere."""
    if world_size() == 1:
        return [item]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    _collective(dist.gather_object, item, gathered, dst=0)
    return gathered


def broadcast_object(item: Any) -> Any:
    """Rank 0's `item` on every process."""
    if world_size() == 1:
        return item
    shared = [item]
    _collective(dist.broadcast_object_list, shared, src=0)
    return shared[0]


def broadcast_state(module: torch.nn.Module) -> None:
    """Rank 0's weights and buffers (BatchNorm statistics differ per process) into every process's module."""
    if world_size() > 1:
        for tensor in module.state_dict().values():
            _collective(dist.broadcast, tensor, src=0)


def _collective(call, *args: Any, **kwargs: Any) -> Any:
    """`call(*args)`; a failure of the transport (a peer's process is gone) becomes RankLost."""
    try:
        return call(*args, **kwargs)
    except (RuntimeError, dist.DistError) as err:
        detail = re.sub(r"\[\S*:\d+\]\s*", "", " ".join(str(err).split())).split(". ")[0][:160]
        me, world = rank(), world_size()
        lost = f"rank {1 - me}" if world == 2 else "another process"  # torchrun's summary names it in any case
        raise RankLost(f"rank {me} of {world} lost {lost} of the job ({detail})") from err


class OtherRankFailed(SystemExit):
    """Another process of the job hit a user error and said so; this one stops quietly with its code."""


def in_order(work: Callable[[], Any], first: bool) -> Any:
    """Run `work()` on the processes where `first` (one per node, or rank 0), then on the others: what the
    first ones write (the annotation index cache, the run folder) the others then read. A user error on
    any process stops every process; only the one that hit it prints it."""
    if world_size() == 1:
        return work()
    result = None
    for turn in (True, False):
        error = None
        if first == turn:
            try:
                result = work()
            except UserError as err:
                error = err
        errors = all_gather_object(None if error is None else str(error))
        if error is not None:
            raise error
        if any(errors):
            raise OtherRankFailed(ExitStatus.BAD_INPUT)
    return result
