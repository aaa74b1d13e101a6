"""`python -m bench.run`: data -> detector -> train -> evaluate -> measure -> report, per seed and backbone.

Within a seed every backbone gets the same data, batches, flips, detector settings and
schedule; each seed repeats that, so the report can separate a real difference from training
noise. The run folder holds everything needed to read and to repeat the run (README, "What
you get"). Under `torchrun`, training is data-parallel; evaluation, measurement and writing
happen on rank 0 while the other processes wait.
"""
from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from backbones import init_seed, parse_backbone, split_backbones

from . import checkpoint, comm, configure, data, detector, evaluate, failures, logs, measure, report, train
from .analysis.receptive_field import receptive_field_rows
from .checks import check_backbones, check_batch_split, check_device, check_writable_dir, default_device, fresh_dir
from .cli import ArgumentParser, entry_point, parse_seeds
from .config import PROFILES, BackboneAudit, RunConfig
from .errors import ConfigError, DataError, ExitStatus, UsageError, UserError
from .evaluate_run import evaluate_model, trained_detector
from .files import set_status, sha256, write_csv, write_json, write_text
from .pretrain.provenance import read_provenance
from .report.load import metrics_row

CONFIG_FILE, METRICS_FILE, DATA_REPORT = "config.yaml", "metrics.csv", "data_report.json"
DIVERGED_FILE, RECEPTIVE_FIELD_FILE = "diverged.json", "receptive_field.csv"
# Rank 0 evaluates (COCO val: minutes) while the others wait in the next collective.
COLLECTIVE_TIMEOUT = timedelta(hours=3)
log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def parse_args(argv: list[str] | None):
    parser = ArgumentParser(
        prog="python -m bench.run",
        description="Train and evaluate Faster R-CNN + FPN on several backbones under identical settings.",
    )
    parser.add_backbones(default="detnet59,resnet50")
    parser.add_profile(PROFILES, default="default")
    parser.add_argument("--data", help="COCO 2017 folder (annotations/, train2017/, val2017/)")
    parser.add_argument("--train-ann", help="any COCO-format training annotation file")
    parser.add_argument("--train-images", help="folder of the training images")
    parser.add_argument("--val-ann", help="COCO-format validation annotation file")
    parser.add_argument("--val-images", help="folder of the validation images")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one training seed")
    seeds.add_argument("--seeds", help="training seeds: a list (0,1,2) or a count (3 = 0,1,2)")
    parser.add_device()
    parser.add_argument("--pretrained-dir", help="folder of local ImageNet weights, <backbone>.pth/.safetensors")
    parser.add_argument("--cache-dir", help="where the synthetic set and annotation indexes are kept")
    parser.add_out(default="results/<date>-<time>-<profile>-s<seeds>-<backbones>", what="new or empty run folder")
    parser.add_config()
    parser.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run in its own folder")
    parser.add_set(example="train.iterations=400")
    parser.add_argument("--strict-data", action="store_true", default=None,
                        help="stop at a skippable data problem (degenerate box...) instead of skipping it")
    parser.add_no_progress()
    return parser.parse_args(argv)


def options_from_args(args) -> dict[str, Any]:
    """The settings given explicitly on the command line, by their dotted names in RunConfig."""
    options: dict[str, Any] = {}
    if args.backbones is not None:
        options["backbones"] = split_backbones(args.backbones)
    if args.seed is not None:
        options["profile.seeds"] = [args.seed]
    if args.seeds is not None:
        options["profile.seeds"] = parse_seeds(args.seeds)
    if args.device is not None:
        options["device"] = args.device
    elif args.config is None:
        options["device"] = default_device()
    for key in ("pretrained_dir", "cache_dir", "strict_data"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    options.update({f"data.{key}": value for key, value in data_paths(args).items()})
    return options


def data_paths(args) -> dict[str, str]:
    explicit = {"train_ann": args.train_ann, "train_images": args.train_images,
                "val_ann": args.val_ann, "val_images": args.val_images}
    if args.data and any(explicit.values()):
        raise UsageError("give either --data or --train-ann/--train-images/--val-ann/--val-images, not both")
    if args.data:
        return vars(data.coco_layout(args.data))
    if any(explicit.values()) and not all(explicit.values()):
        raise UsageError("--train-ann, --train-images, --val-ann and --val-images go together")
    return {key: value for key, value in explicit.items() if value}


def config_from_args(args) -> RunConfig:
    if args.resume:
        given = [flag for flag, value in (("--config", args.config), ("--set", args.set), ("--profile", args.profile),
                                          ("--backbones", args.backbones), ("--seeds", args.seeds or args.seed))
                 if value]
        if given:
            raise UsageError(f"--resume continues the run as its config.yaml says; {given[0]} would change it")
        return configure.build(file=Path(args.resume) / CONFIG_FILE)
    cfg = configure.build(args.profile, args.config, options_from_args(args), args.set)
    try:
        cfg.profile.train.precision = train.resolve_precision(cfg.profile.train.precision, torch.device(cfg.device))
    except (ValueError, RuntimeError) as err:
        raise ConfigError(str(err)) from None
    return cfg


def pretrained_file(cfg: RunConfig, backbone: str) -> Path | None:
    """DIR/<name as typed>.safetensors or .pth, else the plain model's (resnet50[output_stride=16] starts from
    resnet50's ImageNet weights, as the paper's dilated ResNet-50 does: dilation changes no weight's shape)."""
    if cfg.pretrained_dir is None:
        return None
    folder = Path(cfg.pretrained_dir)
    if not folder.is_dir():
        raise UsageError(f"--pretrained-dir {folder} is not a folder")
    stems = list(dict.fromkeys((backbone, parse_backbone(backbone).model)))
    found = [folder / f"{stem}{ext}" for stem in stems for ext in (".safetensors", ".pth")
             if (folder / f"{stem}{ext}").is_file()]
    if not found:
        raise UsageError(f"no {' or '.join(f'{stem}.safetensors or {stem}.pth' for stem in stems)} in {folder}")
    return found[0]


def audit(cfg: RunConfig, name: str, num_classes: int) -> BackboneAudit:
    """Build the detector as training will (weights, norm, freezing) and record what makes it fair."""
    weights = pretrained_file(cfg, name)
    model = detector.build_detector(name, num_classes, cfg.profile.detector, weights)
    decayed, undecayed = train.decay_split(model)
    norm = detector.resolve_norm(cfg.profile.detector, weights is not None)
    made_by = read_provenance(weights, name) if weights else None
    return BackboneAudit(
        weights_file=str(weights) if weights else None,
        weights_sha256=sha256(weights) if weights else None,
        norm=norm,
        frozen_stem=norm == "frozen",  # build_detector freezes the stem with the norm
        decayed_tensors=len(decayed),
        undecayed_tensors=len(undecayed),
        frozen_tensors=sum(1 for p in model.parameters() if not p.requires_grad),
        **(made_by or {}),
    )


def load_data(cfg: RunConfig, keep_val_data: bool = True) -> tuple[data.Split, data.Split]:
    """Both splits read and checked once, their indexes cached for later runs and the node's other
    processes; only the process that scores (`keep_val_data`) keeps the validation ground truth."""
    source = data.make_synthetic(cfg.profile.synthetic, cfg.cache_dir) if cfg.data.synthetic else cfg.data
    train_split = data.load_split(source.train_ann, source.train_images, cfg.cache_dir, cfg.strict_data, keep_data=False)
    val_split = data.load_split(source.val_ann, source.val_images, cfg.cache_dir, strict=False, keep_data=keep_val_data)
    train_cats, val_cats = train_split.index.category_ids.tolist(), val_split.index.category_ids.tolist()
    if train_cats != val_cats:
        raise DataError(f"{source.val_ann} has category ids {val_cats[:5]}..., {source.train_ann} {train_cats[:5]}...: "
                        "training and validation must share their categories")
    return train_split, val_split


def check_resume(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to resume when config.yaml (or a weights file) changed since a checkpoint was saved."""
    for path in sorted(run_dir.glob(f"seed*/*/{checkpoint.CHECKPOINT_FILE}")):
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config")
        changed = configure.first_difference(saved, configure.to_dict(cfg)) if saved else None
        if changed and not configure.is_recorded(saved, changed):
            raise UsageError(f"{path} was saved by an older detbench that did not record {changed}; finish the run "
                             "with that version, or start a new run with --config")
        if changed:
            raise UsageError(f"{run_dir / CONFIG_FILE}: setting {changed} changed since {path} was saved; "
                             "restore it, or start a new run with --config")


class OtherRankFailed(SystemExit):
    """Another process of the job hit a user error and said so; this one stops quietly with its code."""


def in_order(work, first: bool):
    """Run `work()` on the processes where `first` (one per node, or rank 0), then on the others: what the
    first ones write (the annotation index cache, the run folder) the others then read. A user error on
    any process stops every process; only the one that hit it prints it."""
    if comm.world_size() == 1:
        return work()
    result = None
    for turn in (True, False):
        error = None
        if first == turn:
            try:
                result = work()
            except UserError as err:
                error = err
        errors = comm.all_gather_object(None if error is None else str(error))
        if error is not None:
            raise error
        if any(errors):
            raise OtherRankFailed(ExitStatus.BAD_INPUT)
    return result


def prepare(args) -> tuple[RunConfig, Path, tuple[data.Split, data.Split], torch.device]:
    """Settings, every check, the data read once per node, then the run folder: nothing is written
    before every input has been found usable."""
    cfg = config_from_args(args)
    check_backbones(cfg.backbones)
    check_device(cfg.device)
    world = comm.launched_world_size()
    check_batch_split(cfg.profile.train.batch_size, world)
    check_compile(cfg, world)
    check_writable_dir(Path(cfg.cache_dir), "--cache-dir")
    if args.out is not None:
        check_writable_dir(args.out, "--out")
    device = comm.init(torch.device(cfg.device), COLLECTIVE_TIMEOUT)
    splits = in_order(lambda: load_data(cfg, keep_val_data=comm.is_main()), comm.local_rank() == 0)
    run_dir = comm.broadcast_object(in_order(lambda: start_run_folder(cfg, args, splits) if comm.is_main() else None,
                                             comm.is_main()))
    return cfg, run_dir, splits, device


def check_compile(cfg: RunConfig, world: int) -> None:
    """Refuse torch.compile of a backbone whose BatchNorm becomes SyncBatchNorm (trained on several GPUs):
    dynamo breaks its graph there and has open errors with DDP + SyncBatchNorm."""
    if not cfg.profile.train.compile_backbone or world == 1 or torch.device(cfg.device).type != "cuda":
        return
    for name in cfg.backbones:
        if detector.resolve_norm(cfg.profile.detector, pretrained_file(cfg, name) is not None) == "batch":
            raise ConfigError(f"train.compile_backbone with {name}'s BatchNorm trained on {world} GPUs "
                              "(SyncBatchNorm) is not supported by torch.compile; set train.compile_backbone=false, "
                              "or detector.norm=frozen")


def start_run_folder(cfg: RunConfig, args, splits: tuple[data.Split, data.Split]) -> Path:
    """Record the fairness audit, then create (or, resuming, check) the run folder and its config.yaml."""
    recorded = dict(cfg.audit)
    cfg.audit = {name: audit(cfg, name, len(splits[0].index.category_ids) + 1) for name in cfg.backbones}
    if args.resume:
        run_dir = Path(args.resume)
        changed = configure.first_difference(configure.to_dict(RunConfig(audit=recorded)),
                                             configure.to_dict(RunConfig(audit=cfg.audit)))
        if changed:
            raise UsageError(f"{changed} differs from the run's config.yaml: a weights file or the backbone changed")
        check_resume(cfg, run_dir)
        return run_dir
    seeds = "+".join(map(str, cfg.profile.seeds))
    run_dir = fresh_dir(args.out, f"{cfg.profile.name}-s{seeds}-{'-'.join(cfg.backbones)}")
    write_text(run_dir / CONFIG_FILE, configure.to_yaml(cfg))
    warnings = data.skip_warnings(splits[0].index)
    write_json(run_dir / DATA_REPORT, {"skipped": splits[0].index.skipped, "warnings": warnings})
    for line in warnings:
        log.warning("warning: %s (recorded in %s)", line, run_dir / DATA_REPORT)
    return run_dir


def result_dir(run_dir: Path, seed: int, name: str) -> Path:
    return run_dir / f"seed{seed}" / name


def run_backbone(name: str, seed: int, cfg: RunConfig, datasets: tuple[data.CocoDetection, data.CocoDetection],
                 coco_gt: Any, run_dir: Path, device: torch.device, progress: bool, resume: bool,
                 stop: train.StopRequest) -> dict[str, Any] | None:
    """Train and evaluate one backbone with one seed; rank 0 writes its folder and returns its metrics."""
    train_set, val_set = datasets
    rank, world = comm.rank(), comm.world_size()
    out_dir = result_dir(run_dir, seed, name)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    settings = cfg.profile.train
    torch.manual_seed(init_seed(name, seed))  # the training seed, unless the name says init_seed=N
    model = detector.build_detector(name, train_set.num_classes, cfg.profile.detector, pretrained_file(cfg, name))
    model.to(device, memory_format=torch.channels_last if settings.channels_last else torch.preserve_format)
    if settings.compile_backbone:
        train.compile_backbone(model)
    torch.manual_seed(seed)  # the same RoI sampling draws for every backbone, whatever its init consumed
    train_set.seed = seed

    unreadable = data.UnreadableImages(run_dir / DATA_REPORT, record=rank == 0)

    def make_loader(start: int):
        pin = settings.pin_memory and device.type == "cuda"
        return unreadable.watch(data.build_train_loader(train_set, settings.batch_size, seed, settings.workers, start,
                                                        rank, world, pin_memory=pin))

    trained = model
    if world > 1:
        if device.type == "cuda":  # batch statistics over all GPUs, as training BatchNorm from scratch needs
            trained = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[device] if device.type == "cuda" else None)
    val_loader = data.build_eval_loader(val_set, batch_size=2, workers=settings.workers)

    def validate() -> dict[str, float]:
        """AP on the validation set now, for eval.csv (train.eval_every)."""
        found = evaluate.predict(model, val_loader, val_set.label_to_category_id, device, progress=False)
        stats = evaluate.evaluate_detections(coco_gt, found).stats
        return {name: stats[name] for name in train.EVAL_COLUMNS[1:]}

    try:
        result = train.train(trained, make_loader, settings, out_dir, device, config=configure.to_dict(cfg),
                             progress=progress, desc=f"train {name} seed {seed}", resume=resume, stop=stop,
                             validate=validate if rank == 0 else None)
    except train.TrainingOutOfMemory as err:
        raise failures.out_of_memory(err, cfg, world, run_dir, out_dir / checkpoint.CHECKPOINT_FILE) from None
    scores = evaluate_model(model, val_set, coco_gt, out_dir, device, workers=settings.workers, progress=progress,
                            desc=f"evaluate {name} seed {seed}")
    if scores is None:  # another process than rank 0: it predicted its shard, rank 0 scored
        return None
    metrics = {
        "backbone": name,
        "seed": seed,
        **scores,
        "train": {"iterations": result.iterations, "seconds": round(result.seconds, 2),
                  "images_per_s": round(result.images_per_s, 3), "final_loss": result.final_loss},
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics


TIMED_VAL_IMAGES = 4


def trained_models(cfg: RunConfig, run_dir: Path, num_classes: int) -> dict[str, list[torch.nn.Module]]:
    """Each backbone's trained detectors, one per finished seed, in seed order."""
    found: dict[str, list[torch.nn.Module]] = {}
    for name in cfg.backbones:
        for seed in cfg.profile.seeds:
            folder = result_dir(run_dir, seed, name)
            if (folder / "metrics.json").is_file():
                state = checkpoint.load(folder / checkpoint.CHECKPOINT_FILE)
                found.setdefault(name, []).append(trained_detector(cfg, name, num_classes, state))
    return found


def receptive_fields(cfg: RunConfig, run_dir: Path, val_set: data.CocoDetection,
                     trained: dict[str, list[torch.nn.Module]]) -> None:
    """receptive_field.csv: per stage, stride, theoretical RF, and the effective RF at the initialisation
    training started from and after training, on validation images as the backbone sees them."""
    images = [val_set[i][0] for i in range(min(TIMED_VAL_IMAGES, len(val_set)))]
    rows = []
    for name in cfg.backbones:
        torch.manual_seed(init_seed(name, cfg.profile.seeds[0]))  # the initialisation the first seed trained from
        start = detector.build_detector(name, val_set.num_classes, cfg.profile.detector, pretrained_file(cfg, name))
        batch = start.eval().transform(images)[0].tensors  # resized and normalised, as the backbone sees them
        bodies = [model.backbone.body for model in trained.get(name, [])]
        rows += receptive_field_rows(name, start.backbone.body, bodies, batch)
    write_csv(run_dir / RECEPTIVE_FIELD_FILE, pd.DataFrame(rows))


def execute(cfg: RunConfig, run_dir: Path, splits: tuple[data.Split, data.Split], device: torch.device,
            progress: bool, resume: bool, stop: train.StopRequest) -> tuple[str, list[str]]:
    """Train, evaluate and measure every backbone and seed, write the report; return the summary to print
    and the trainings that diverged ("resnet50 seed 0")."""
    rank = comm.rank()
    train_split, val_split = splits
    datasets = (
        data.CocoDetection(train_split.index, train_split.image_dir, train_split.ann_path, train=True,
                           hflip=cfg.profile.train.hflip, skip_unreadable=not cfg.strict_data),
        data.CocoDetection(val_split.index, val_split.image_dir, val_split.ann_path, train=False),
    )
    coco_gt = data.ground_truth(val_split.data) if rank == 0 else None
    rows, diverged = [], []
    for seed in cfg.profile.seeds:
        for name in cfg.backbones:
            out_dir = result_dir(run_dir, seed, name)
            done = evaluate.read_json(out_dir / "metrics.json") if resume and (out_dir / "metrics.json").is_file() else None
            if resume and (out_dir / DIVERGED_FILE).is_file():
                diverged.append(f"{name} seed {seed}")
                continue  # it would diverge again: the same seed gives the same steps
            if not done:
                stop.check(f"{name} seed {seed}")
            try:
                metrics = done or run_backbone(name, seed, cfg, datasets, coco_gt, run_dir, device, progress,
                                               resume, stop)
            except train.TrainingDiverged as err:
                diverged.append(f"{name} seed {seed}")
                if rank == 0:
                    write_json(out_dir / DIVERGED_FILE, {"reason": str(err)})
                    kept = (f"its last good checkpoint ({out_dir / checkpoint.CHECKPOINT_FILE}) is kept"
                            if (out_dir / checkpoint.CHECKPOINT_FILE).is_file() else "no checkpoint was due yet")
                    log.warning("warning: %s; %s; the other backbones go on", err, kept)
                continue
            if rank == 0:
                rows.append(metrics_row(metrics))
                write_csv(run_dir / METRICS_FILE, pd.DataFrame(rows))  # kept current after each backbone
                stats, trained = metrics["stats"], metrics["train"]
                log.info("%s seed %d: %d iterations in %.1f min, AP %.1f, AP50 %.1f", name, seed, trained["iterations"],
                         trained["seconds"] / 60, 100 * stats["AP"], 100 * stats["AP50"])
    if rank == 0:
        stop.check("measurement")
        trained = trained_models(cfg, run_dir, datasets[1].num_classes)
        receptive_fields(cfg, run_dir, datasets[1], trained)
        weights = {name: pretrained_file(cfg, name) for name in cfg.backbones}
        images = [datasets[1][i][0] for i in range(min(TIMED_VAL_IMAGES, len(datasets[1])))]
        measure.measure(cfg.backbones, cfg.profile, device, run_dir, datasets[1].num_classes, progress=progress,
                        weights=weights, trained={name: (models[0], images) for name, models in trained.items()},
                        world_size=comm.world_size())
        finished = report.load_run(run_dir)  # one bootstrap for the report and the summary
        report.write_report(finished)
    comm.destroy()
    return report.summary(finished) if rank == 0 else "", diverged


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, run_dir, splits, device = prepare(args)
    logs.attach_run_log(run_dir)  # appended to on --resume
    is_main = comm.is_main()
    start = time.perf_counter()
    status = (lambda *a, **k: set_status(run_dir, *a, **k)) if is_main else (lambda *a, **k: None)
    resume_hint = f"python -m bench.run --resume {run_dir}"
    status("running")
    try:
        with train.StopRequest() as stop:
            try:
                summary, diverged = execute(cfg, run_dir, splits, device, progress=not args.no_progress,
                                            resume=bool(args.resume), stop=stop)
            except comm.RankLost as err:  # handled while torchrun's SIGTERM to the survivors only sets a flag
                status("failed", str(err), resume=resume_hint)
                log.error("error: %s; the last checkpoint is kept; under torchrun `%s` goes on", err, resume_hint)
                return ExitStatus.RANK_LOST
    except (train.TrainingStopped, KeyboardInterrupt) as err:
        status("interrupted", str(err) or "KeyboardInterrupt", resume=resume_hint)
        log.warning("\ninterrupted: %s; results so far are in %s; `%s` goes on", str(err) or "Ctrl-C", run_dir,
                    resume_hint)
        return ExitStatus.INTERRUPTED
    except DataError as err:
        status("failed", str(err), resume=resume_hint)
        raise
    except BaseException as err:
        failed = failures.stopped_by(err, resume_hint)
        with contextlib.suppress(OSError):  # on a full disk status.json may stay `running`
            status("failed", str(failed or f"{type(err).__name__}: {err}"), resume=resume_hint)
        if failed is None:
            raise
        log.error("error: %s", failed)
        return failed.status
    status("finished", diverged=diverged)
    if is_main:
        minutes = (time.perf_counter() - start) / 60
        log.info("\n%s\n", summary)
        log.info("%s profile, %d backbone(s) x %d seed(s), %.1f min; report: %s", cfg.profile.name, len(cfg.backbones),
                 len(cfg.profile.seeds), minutes, run_dir / "report.md")
        if diverged:
            log.error("error: %s", failures.diverged(diverged, run_dir))
    return ExitStatus.DIVERGED if diverged else ExitStatus.OK


if __name__ == "__main__":
    raise SystemExit(main())
