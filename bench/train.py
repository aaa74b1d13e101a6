"""Training: SGD with momentum, linear warm-up, step decay, as the paper; mixed precision where it is native.

The learning rate scales linearly with the batch (`base_lr * batch / base_batch`), so a
profile with a smaller batch keeps the paper's effective step size. Losses go to `loss.csv`
every `log_every` iterations (window means), a checkpoint every `checkpoint_every`
iterations, when asked to stop, and at the end; a resumed run continues bit-exactly.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import platform
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import checkpoint, comm
from .errors import DataError
from .files import write_text
from .layout import ResultFiles
from .progress import progress as progress_bar
from .settings import TrainConfig

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
LOSS_COLUMNS = ("iteration", "lr", "loss", *LOSS_NAMES, "images_per_s", "elapsed_s")
EVAL_COLUMNS = ("iteration", "AP", "AP50", "AP75", "APs", "APm", "APl")


class TrainingDiverged(RuntimeError):
    """A loss stopped being finite; the message names the iteration and the loss term."""


class TrainingStopped(RuntimeError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at the iteration the message names."""


class TrainingOutOfMemory(RuntimeError):
    """CUDA ran out of memory in a step; the message names the iteration. No checkpoint is saved:
    the step may have updated part of the model."""


@dataclass
class TrainResult:
    iterations: int  # of the schedule, done by now
    seconds: float  # training time over all sessions of a resumed run
    images_per_s: float  # over all processes
    final_loss: float


class StopRequest:
    """Turns SIGINT/SIGTERM into a request the training loop honours at the next safe point
    (after a whole step), so it can save a checkpoint; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __enter__(self) -> StopRequest:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def check(self, where: str) -> None:
        """Between two pieces of work (backbones, measurement): stop here if asked to."""
        if self.signal is not None:
            raise TrainingStopped(f"stopped by {self.name} before {where}")


def scaled_lr(cfg: TrainConfig) -> float:
    return cfg.base_lr * cfg.batch_size / cfg.base_batch


def decay_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, norm weights and biases) among the trainable parameters: timm's rule, 1-D or bias."""
    decayed, undecayed = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (undecayed if param.ndim <= 1 or name.endswith(".bias") else decayed).append(param)
    return decayed, undecayed


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    decayed, undecayed = decay_split(model)
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay},
              {"params": undecayed, "weight_decay": cfg.norm_bias_weight_decay}]
    return torch.optim.SGD(groups, lr=scaled_lr(cfg), momentum=cfg.momentum)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from `warmup_factor` times the lr, then x`lr_gamma` at each step."""
    milestones = sorted({round(f * cfg.iterations) for f in cfg.lr_steps})
    warmup = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=cfg.warmup_factor if cfg.warmup_iters else 1.0, total_iters=max(cfg.warmup_iters, 1)
    )
    decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.ChainedScheduler([warmup, decay])


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware (AVX512-BF16/AMX CPUs, Ampere+ GPUs).

    oneDNN's own check accepts any AVX-512 x86 CPU, where bf16 is emulated and slower than fp32,
    so on x86 the AVX512-BF16 or AMX instructions must be there too.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where native, else 'fp32'; fp16 needs CUDA (its gradient scaler does)."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return precision


def compile_backbone(model: nn.Module, backend: str | Callable = "inductor") -> None:
    """torch.compile of the detector's backbone, in place (the state dict keeps its names), after a reset:
    dynamo's recompile limit counts per code object, which every backbone and seed shares, so without
    the reset later backbones and seeds would silently run eager."""
    torch.compiler.reset()
    model.backbone.body.compile(backend=backend)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: list[torch.Tensor],
    targets: list[dict],
    precision: str = "fp32",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One SGD step: losses (under autocast for bf16/fp16), backward (scaled for fp16), update."""
    device_type = images[0].device.type
    dtype = AUTOCAST_DTYPES.get(precision)
    with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), losses


def _batches(loader: Iterable) -> Iterator:
    """The loader's batches; a data problem raised in a worker comes out as the DataError it was."""
    iterator = iter(loader)
    while True:
        try:
            yield next(iterator)
        except DataError as err:
            lines = [line for line in str(err).splitlines() if line.strip()]
            raise DataError(lines[-1].split("DataError: ", 1)[-1]) from None


class CsvLog:
    """A per-iteration CSV (loss.csv, eval.csv), rewritten whole and atomically at each row, so a crash
    keeps it up to the last row; on resume the rows after the checkpoint are dropped, so each
    iteration is logged once. Also sends every number to TensorBoard when it is installed."""

    def __init__(self, path: Path, columns: tuple[str, ...], resume_at: int = 0, board: Any = None) -> None:
        self.path, self.columns, self.board = path, columns, board
        self.rows: list[dict[str, Any]] = []
        if resume_at and path.is_file():
            with path.open(newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["iteration"]) <= resume_at]
        self._write()

    def write(self, **row: float) -> None:
        self.rows.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        self._write()
        if self.board is not None:
            for key, value in row.items():
                if key != "iteration":
                    self.board.add_scalar(f"{self.path.stem}/{key}", value, row["iteration"])
            self.board.flush()

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, buffer.getvalue())


def tensorboard(folder: Path) -> Any:
    """A SummaryWriter into `folder` when the optional `tensorboard` package is there."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


NONFINITE = (float("nan"), float("inf"), float("-inf"))


def failure_code(loss: torch.Tensor, losses: dict[str, torch.Tensor]) -> int:
    """0 for a finite loss, else a number naming the first non-finite term (or the sum) and its value,
    so that one reduction tells every process what went wrong where."""
    if math.isfinite(loss.item()):
        return 0
    terms = [*losses.values(), loss]
    term = next(i for i, value in enumerate(terms) if not math.isfinite(value.item()))
    value = terms[term].item()
    kind = 0 if math.isnan(value) else 1 if value > 0 else 2
    return 1 + term * len(NONFINITE) + kind


def _diverged(desc: str, iteration: int, names: list[str], failures: dict[int, int], world: int) -> TrainingDiverged:
    """The same message on every process: the first rank whose loss stopped being finite, and how."""
    where, code = min(failures.items())
    term, kind = divmod(code - 1, len(NONFINITE))
    name = [*names, "loss"][term]
    on_rank = f" on rank {where} (of {world} processes; every process stopped)" if world > 1 else ""
    return TrainingDiverged(f"{desc}: {name} became {NONFINITE[kind]} at iteration {iteration}{on_rank}")


def train(
    model: nn.Module,
    make_loader: Callable[[int], Iterable],
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "train",
    resume: bool = False,
    stop: StopRequest | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
) -> TrainResult:
    """Train `model` for `cfg.iterations`; rank 0 writes `loss.csv` and `checkpoint.pth` into `out_dir`.

    `make_loader(start)` gives the endless batches from iteration `start` on. With `resume`,
    training continues bit-exactly from `out_dir/checkpoint.pth` when there is one (one in detbench's
    first format starts again, with a warning). A NaN or Inf loss raises TrainingDiverged and CUDA out
    of memory TrainingOutOfMemory, without saving; a stop request saves and raises TrainingStopped, a
    data error (--strict-data) saves the last whole step and raises.
    `validate()` (rank 0, every `cfg.eval_every` iterations) gives the numbers for eval.csv.
    """
    files = ResultFiles(Path(out_dir))
    path = files.checkpoint
    world, is_main = comm.world_size(), comm.is_main()
    precision = resolve_precision(cfg.precision, device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    done, window, seconds_before, images_before, last_loss = 0, [], 0.0, 0, float("nan")
    state = checkpoint.load(path) if resume and path.is_file() else None
    if state is not None and checkpoint.continuable(state):
        done = checkpoint.restore(state, model, optimizer, scheduler, scaler)
        window, seconds_before = state["window"], state["seconds"]
        images_before, last_loss = state["images"], state["loss"]
    elif state is not None and is_main:
        log.warning("warning: %s is of detbench's first checkpoint format, which cannot be continued: %s starts "
                    "again from iteration 0", path, desc)
    model.train()

    def save(iteration: int) -> None:
        extra = {"window": window, "seconds": seconds_before + time.perf_counter() - start,
                 "images": images_before + images_seen, "loss": last_loss}
        checkpoint.save(path, iteration, model, optimizer, scheduler, scaler, config or {}, extra)

    board = tensorboard(files.tensorboard) if is_main else None
    writer = CsvLog(files.loss, LOSS_COLUMNS, done, board) if is_main else None
    evals = CsvLog(files.eval, EVAL_COLUMNS, done, board) if is_main and validate and cfg.eval_every else None
    images_seen, start = 0, time.perf_counter()
    bar = progress_bar(cfg.iterations, desc, enabled=progress and is_main, initial=done)
    batches = _batches(make_loader(done))
    try:
        for iteration in range(done + 1, cfg.iterations + 1):
            try:
                images, targets = next(batches)
            except DataError as err:
                if iteration - 1 > done:
                    save(iteration - 1)
                kept = f"its checkpoint after iteration {iteration - 1} is kept" if iteration > 1 else "nothing saved"
                raise DataError(f"{err}; {desc} stopped, {kept}") from None
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            lr = optimizer.param_groups[0]["lr"]
            try:
                loss, losses = train_step(model, optimizer, scaler, images, targets, precision)
            except torch.cuda.OutOfMemoryError:
                raise TrainingOutOfMemory(f"{desc}: CUDA out of memory at iteration {iteration}") from None
            # one reduction per step: a stop request and a non-finite loss on any process stop them all
            stopping, failures = comm.agree(stop is not None and stop.requested, failure_code(loss, losses))
            if failures:
                raise _diverged(desc, iteration, list(losses), failures, world)
            scheduler.step()
            last_loss = loss.item()

            images_seen += len(images) * world  # every process trains on its own share of the batch
            elapsed = time.perf_counter() - start
            window.append({"loss": loss.item(), **{k: v.item() for k, v in losses.items()}})
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{images_seen / elapsed:.2f}")
            if iteration % cfg.log_every == 0 or iteration == cfg.iterations:
                if writer:
                    means = {k: sum(row[k] for row in window) / len(window) for k in window[0]}
                    writer.write(iteration=iteration, lr=lr, images_per_s=images_seen / elapsed,
                                 elapsed_s=seconds_before + elapsed, **means)
                window = []
            if evals and cfg.eval_every and iteration % cfg.eval_every == 0:
                evals.write(iteration=iteration, **validate())
                model.train()
            if stopping:
                save(iteration)
                by = stop.name or "a signal to another process"
                raise TrainingStopped(f"{desc}: stopped by {by} after iteration {iteration}; checkpoint saved")
            if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0 and iteration < cfg.iterations:
                save(iteration)
        save(cfg.iterations)
    finally:
        bar.close()
        if board is not None:
            board.close()
    seconds = seconds_before + time.perf_counter() - start
    return TrainResult(cfg.iterations, seconds, (images_before + images_seen) / max(seconds, 1e-9), last_loss)
