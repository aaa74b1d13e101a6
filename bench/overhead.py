"""`python -m bench.overhead`: is the harness ever what a benchmark measures? Ratios from one process.

Each comparison times detbench's own code against the bare minimum on the same model, batch and
inputs, interleaved round by round so drifting clocks and neighbours hit both alike, and prints
`<what> ratio: <value>` (detbench over bare; 1.00 = no overhead):

- `train step`: `bench.train.train_step` against forward, loss sum, backward and a step of the
  same SGD optimizer;
- `training loop`: `bench.train.train` (data loading, logging, the progress line) per iteration
  against the bare step on one fixed batch; the loader's images/s alone is printed beside it;
- `inference`: `bench.evaluation.evaluator.predict` into a `CocoEvaluator` (batches from the loader,
  conversion to COCO results) against the model called on the same images, held in memory;
- and what the fast paths change for a training step: `bf16/fp32` and `channels_last/contiguous`
  time ratios (below 1 is faster).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from backbones import split_backbones

from . import data, detector, settings, train
from .checks import check_backbones, check_device, default_device
from .cli import ArgumentParser, entry_point
from .evaluation.evaluator import predict
from .evaluation.evaluators import CocoEvaluator
from .layout import ResultFiles
from .measure.timing import pinned_threads
from .settings import PROFILES
from .settings.device import resolve

DEFAULT_BACKBONE = "resnet50"
log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int, device: torch.device) -> float:
    """Median time of `a` over median time of `b`, timed alternately, `rounds` calls each."""
    times: dict[str, list[float]] = {"a": [], "b": []}
    a(), b()  # warm-up
    for _ in range(rounds):
        for key, fn in (("a", a), ("b", b)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["a"]) / statistics.median(times["b"])


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: list, targets: list,
              dtype: torch.dtype | None) -> None:
    """Forward with losses, backward, SGD update: nothing else."""
    with torch.autocast(images[0].device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = sum(model(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class Bench:
    """One backbone's detector, optimizer, training data and a fixed batch, per the profile."""

    def __init__(self, backbone: str, profile_name: str | None, overrides: list[str], device: torch.device) -> None:
        self.cfg = resolve(settings.build(profile_name, options={"device": device.type}, overrides=overrides), device)
        self.device = device
        self.train_cfg = self.cfg.profile.train
        source = data.make_synthetic(self.cfg.profile.synthetic, self.cfg.cache_dir)
        split = data.load_split(source.train_ann, source.train_images, self.cfg.cache_dir, False, keep_data=False)
        self.dataset = data.CocoDetection(split.index, split.image_dir, split.ann_path, train=True,
                                          hflip=self.train_cfg.hflip)
        val = data.load_split(source.val_ann, source.val_images, None, False, keep_data=False)
        self.val_set = data.CocoDetection(val.index, val.image_dir, val.ann_path, train=False)
        self.backbone = backbone

    def model(self, channels_last: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        model = detector.build_detector(self.backbone, self.dataset.num_classes, self.cfg.profile.detector)
        fmt = torch.channels_last if channels_last else torch.preserve_format
        return model.to(self.device, memory_format=fmt).train()

    def loader(self, start: int = 0):
        return data.build_train_loader(self.dataset, self.train_cfg.batch_size, 0, self.train_cfg.workers, start,
                                       pin_memory=self.train_cfg.pin_memory and self.device.type == "cuda")

    def batch(self) -> tuple[list, list]:
        images, targets = next(iter(self.loader()))
        return ([i.to(self.device) for i in images],
                [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets])


def train_step_ratio(bench: Bench, rounds: int) -> float:
    precision = train.resolve_precision(bench.train_cfg.precision, bench.device)
    model = bench.model(bench.train_cfg.channels_last)
    images, targets = bench.batch()
    ours = train.build_optimizer(model, bench.train_cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    bare = train.build_optimizer(model, bench.train_cfg)  # the same SGD (groups, decay): only the harness differs
    dtype = train.AUTOCAST_DTYPES.get(precision)
    return interleaved(lambda: train.train_step(model, ours, scaler, images, targets, precision),
                       lambda: bare_step(model, bare, images, targets, dtype), rounds, bench.device)


def loop_ratio(bench: Bench, iterations: int) -> tuple[float, float, float]:
    """(loop time per iteration / bare step time, loader images/s, bare step images/s)."""
    precision = train.resolve_precision(bench.train_cfg.precision, bench.device)
    model = bench.model(bench.train_cfg.channels_last)
    cfg = dataclasses.replace(bench.train_cfg, iterations=iterations, log_every=1, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as out:
        train.train(model, bench.loader, cfg, Path(out), bench.device, progress=True, desc="overhead loop")
        rows = ResultFiles(Path(out)).loss.read_text().splitlines()[1:]
    # elapsed_s from the first iteration's end to the last's: the first (one-time set-up) and the final
    # checkpoint save are not per-iteration costs
    loop = (float(rows[-1].split(",")[-1]) - float(rows[0].split(",")[-1])) / (iterations - 1)
    images, targets = bench.batch()
    optimizer = train.build_optimizer(model, bench.train_cfg)
    dtype = train.AUTOCAST_DTYPES.get(precision)
    step_times = []
    for _ in range(max(3, iterations // 2)):
        _sync(bench.device)
        start = time.perf_counter()
        bare_step(model, optimizer, images, targets, dtype)
        _sync(bench.device)
        step_times.append(time.perf_counter() - start)
    step = statistics.median(step_times)
    start, count = time.perf_counter(), 0
    for images, _ in itertools.islice(bench.loader(), iterations):
        count += len(images)
    loader_images_per_s = count / (time.perf_counter() - start)
    return loop / step, loader_images_per_s, bench.train_cfg.batch_size / step


def inference_ratio(bench: Bench, images: int, rounds: int) -> float:
    model = bench.model(False).eval()
    subset = torch.utils.data.Subset(bench.val_set, range(min(images, len(bench.val_set))))
    loader = torch.utils.data.DataLoader(subset, batch_size=2, collate_fn=data.collate)
    held = [[image.to(bench.device) for image in batch] for batch, _ in loader]
    boxes = CocoEvaluator(None, bench.val_set.label_to_category_id, sharded=False)  # converts, never scores

    def bare() -> None:
        with torch.inference_mode():
            for batch in held:
                model(batch)

    return interleaved(
        lambda: predict(model, loader, boxes, bench.device, progress=False),
        bare, rounds, bench.device)


def fast_path_ratio(bench: Bench, rounds: int, precision: tuple[str, str], channels_last: tuple[bool, bool]) -> float:
    """Training-step time of the first setting over the second (each on its own copy of the model)."""
    images, targets = bench.batch()
    steps = []
    for p, cl in zip(precision, channels_last):
        model = bench.model(cl)
        optimizer = train.build_optimizer(model, bench.train_cfg)
        scaler = torch.amp.GradScaler("cuda", enabled=p == "fp16")
        steps.append(lambda m=model, o=optimizer, s=scaler, p=p: train.train_step(m, o, s, images, targets, p))
    return interleaved(steps[0], steps[1], rounds, bench.device)


def report_ratios(bench: Bench, rounds: int, iterations: int, threads: int) -> None:
    """Log every ratio of one backbone, each as soon as it is timed."""
    device, cfg = bench.device, bench.train_cfg
    log.info("# %s, %s profile, batch %d, %s, %d threads, precision %s, channels_last %s", bench.backbone,
             bench.cfg.profile.name, cfg.batch_size, device, threads, train.resolve_precision(cfg.precision, device),
             cfg.channels_last)
    log.info("train step ratio: %.3f", train_step_ratio(bench, rounds))
    loop, loader_speed, step_speed = loop_ratio(bench, iterations)
    log.info("training loop ratio: %.3f  (loader alone %.1f images/s, bare step %.2f images/s)", loop, loader_speed,
             step_speed)
    log.info("inference ratio: %.3f", inference_ratio(bench, 16, max(3, rounds // 2)))
    native = "bf16" if train.native_bf16(device) else "fp32"
    if native == "bf16":
        log.info("train step bf16/fp32 time ratio: %.3f",
                 fast_path_ratio(bench, rounds, ("bf16", "fp32"), (False, False)))
    log.info("train step channels_last/contiguous time ratio (%s): %.3f", native,
             fast_path_ratio(bench, rounds, (native, native), (True, False)))
    if device.type == "cuda":
        log.info("peak CUDA memory of this process (up to two models at once): %.0f MiB",
                 torch.cuda.max_memory_allocated(device) / 2**20)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_backbones(default=DEFAULT_BACKBONE)
    parser.add_profile(PROFILES, default="default")
    parser.add_device()
    parser.add_set(example="train.batch_size=4")
    parser.add_argument("--rounds", type=int, default=20, help="timed calls of each side, interleaved")
    parser.add_argument("--iterations", type=int, default=30, help="training-loop iterations (at least 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores torch sees)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.iterations < 2:
        parser.error("--rounds must be >= 1 and --iterations >= 2")
    backbones = split_backbones(args.backbones or DEFAULT_BACKBONE)
    check_backbones(backbones)
    device = check_device(args.device or default_device())
    for name in backbones:
        bench = Bench(name, args.profile, args.set, device)
        with pinned_threads(args.threads) as threads:
            report_ratios(bench, args.rounds, args.iterations, threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
