"""`python -m bench.run`: data -> detector -> train -> evaluate -> measure -> report, per seed and backbone.

Within a seed every backbone gets the same data, batches, flips, detector settings and
schedule; each seed repeats that, so the report can separate a real difference from training
noise. The run folder holds everything needed to read and to repeat the run (README, "What
you get"). Under `torchrun`, training is data-parallel; evaluation, measurement and writing
happen on rank 0 while the other processes wait.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from backbones import init_seed, parse_backbone, split_backbones

from . import checkpoint, comm, data, detector, failures, logs, measure, report, settings, train
from .analysis.receptive_field import receptive_field_rows
from .checks import check_backbones, check_batch_split, check_device, check_writable_dir, default_device, fresh_dir
from .cli import ArgumentParser, entry_point, parse_seeds
from .errors import ConfigError, DataError, ExitStatus, UsageError
from .evaluation.evaluator import inference_on_dataset
from .evaluation.evaluators import BOX_SCORES, CocoEvaluator
from .evaluation.trained import evaluate_model, trained_detector
from .files import read_json, set_status, sha256, write_csv, write_json, write_text
from .layout import PretrainLayout, RunLayout
from .pretrain.provenance import read_provenance
from .report.load import metrics_row
from .settings import PROFILES, BackboneAudit, RunConfig, SavedRun
from .settings.device import resolve

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


def config_from_args(args, saved: SavedRun | None = None) -> RunConfig:
    """The run's settings, resolved for its device: from the command line, or with --resume the `saved` run's."""
    if args.resume:
        given = [flag for flag, value in (("--config", args.config), ("--set", args.set), ("--profile", args.profile),
                                          ("--backbones", args.backbones), ("--seeds", args.seeds or args.seed))
                 if value]
        if given:
            raise UsageError(f"--resume continues the run as its config.yaml says; {given[0]} would change it")
        cfg = (saved or settings.load_run_config(Path(args.resume))).config
    else:
        cfg = settings.build(args.profile, args.config, options_from_args(args), args.set)
    try:
        device = torch.device(cfg.device)
    except RuntimeError as err:
        raise ConfigError(str(err)) from None
    return resolve(cfg, device)


def pretrained_file(cfg: RunConfig, backbone: str) -> Path | None:
    """DIR/<name as typed>.safetensors or .pth, else the plain model's (resnet50[output_stride=16] starts from
    resnet50's ImageNet weights, as the paper's dilated ResNet-50 does: dilation changes no weight's shape)."""
    if cfg.pretrained_dir is None:
        return None
    folder = Path(cfg.pretrained_dir)
    if not folder.is_dir():
        raise UsageError(f"--pretrained-dir {folder} is not a folder")
    stems = list(dict.fromkeys((backbone, parse_backbone(backbone).model)))
    found = [path for stem in stems for path in PretrainLayout(folder).weights_choices(stem) if path.is_file()]
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


def check_resume(cfg: RunConfig, saved: SavedRun) -> None:
    """Refuse to resume when config.yaml (or a weights file) changed since a checkpoint was saved; a checkpoint's
    settings are read in the run's own config.yaml version, as that file is."""
    for name, seed in ((name, seed) for seed in cfg.profile.seeds for name in cfg.backbones):
        path = saved.layout.result(name, seed).checkpoint
        recorded = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config") \
            if path.is_file() else None
        changed = settings.first_difference(saved.saved_settings(recorded), settings.to_dict(cfg)) \
            if recorded else None
        if changed:
            raise UsageError(f"{saved.layout.config}: setting {changed} changed since {path} was saved; "
                             "restore it, or start a new run with --config")


def prepare(args) -> tuple[RunConfig, RunLayout, tuple[data.Split, data.Split], torch.device]:
    """Settings, every check, the data read once per node, then the run folder: nothing is written
    before every input has been found usable."""
    saved = settings.load_run_config(Path(args.resume)) if args.resume else None
    cfg = config_from_args(args, saved)
    check_backbones(cfg.backbones)
    check_device(cfg.device)
    world = comm.launched_world_size()
    check_batch_split(cfg.profile.train.batch_size, world)
    check_compile(cfg, world)
    check_writable_dir(Path(cfg.cache_dir), "--cache-dir")
    if args.out is not None:
        check_writable_dir(args.out, "--out")
    device = comm.init(torch.device(cfg.device), COLLECTIVE_TIMEOUT)
    splits = comm.in_order(lambda: load_data(cfg, keep_val_data=comm.is_main()), comm.local_rank() == 0)
    cfg, layout = comm.broadcast_object(comm.in_order(
        lambda: start_run_folder(cfg, args, splits, saved) if comm.is_main() else None, comm.is_main()))
    return cfg, layout, splits, device


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


def start_run_folder(cfg: RunConfig, args, splits: tuple[data.Split, data.Split],
                     saved: SavedRun | None) -> tuple[RunConfig, RunLayout]:
    """Record the fairness audit, then create (or, resuming, check) the run folder and its config.yaml; return
    the settings with their audit, and the folder."""
    audited = dataclasses.replace(cfg, audit={name: audit(cfg, name, len(splits[0].index.category_ids) + 1)
                                              for name in cfg.backbones})
    if saved is not None:
        # a version 1 run recorded no audit: nothing to hold the backbones to
        changed = saved.recorded("audit") and settings.first_difference(settings.to_dict(RunConfig(audit=cfg.audit)),
                                            settings.to_dict(RunConfig(audit=audited.audit)))
        if changed:
            raise UsageError(f"{changed} differs from the run's config.yaml: a weights file or the backbone changed")
        check_resume(audited, saved)
        return audited, saved.layout
    seeds = "+".join(map(str, cfg.profile.seeds))
    layout = RunLayout(fresh_dir(args.out, f"{cfg.profile.name}-s{seeds}-{'-'.join(cfg.backbones)}"))
    write_text(layout.config, settings.to_yaml(audited))
    warnings = data.skip_warnings(splits[0].index)
    write_json(layout.data_report, {"skipped": splits[0].index.skipped, "warnings": warnings})
    for line in warnings:
        log.warning("warning: %s (recorded in %s)", line, layout.data_report)
    return audited, layout


def run_backbone(name: str, seed: int, cfg: RunConfig, datasets: tuple[data.CocoDetection, data.CocoDetection],
                 coco_gt: Any, layout: RunLayout, device: torch.device, progress: bool, resume: bool,
                 stop: train.StopRequest) -> dict[str, Any] | None:
    """Train and evaluate one backbone with one seed; rank 0 writes its folder and returns its metrics."""
    train_set, val_set = datasets
    rank, world = comm.rank(), comm.world_size()
    files = layout.result(name, seed)
    if rank == 0:
        files.folder.mkdir(parents=True, exist_ok=True)
    schedule = cfg.profile.train
    torch.manual_seed(init_seed(name, seed))  # the training seed, unless the name says init_seed=N
    model = detector.build_detector(name, train_set.num_classes, cfg.profile.detector, pretrained_file(cfg, name))
    model.to(device, memory_format=torch.channels_last if schedule.channels_last else torch.preserve_format)
    if schedule.compile_backbone:
        train.compile_backbone(model)
    torch.manual_seed(seed)  # the same RoI sampling draws for every backbone, whatever its init consumed
    train_set.seed = seed

    unreadable = data.UnreadableImages(layout.data_report, record=rank == 0)

    def make_loader(start: int):
        pin = schedule.pin_memory and device.type == "cuda"
        return unreadable.watch(data.build_train_loader(train_set, schedule.batch_size, seed, schedule.workers, start,
                                                        rank, world, pin_memory=pin))

    trained = model
    if world > 1:
        if device.type == "cuda":  # batch statistics over all GPUs, as training BatchNorm from scratch needs
            trained = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[device] if device.type == "cuda" else None)
    val_loader = data.build_eval_loader(val_set, batch_size=2, workers=schedule.workers)

    def validate() -> dict[str, float]:
        """AP on the validation set now, for eval.csv (train.eval_every)."""
        boxes = CocoEvaluator(coco_gt, val_set.label_to_category_id, sharded=False)  # rank 0 alone
        stats = inference_on_dataset(model, val_loader, boxes, device, progress=False)[BOX_SCORES]["stats"]
        return {name: stats[name] for name in train.EVAL_COLUMNS[1:]}

    try:
        result = train.train(trained, make_loader, schedule, files.folder, device, config=settings.to_dict(cfg),
                             progress=progress, desc=f"train {name} seed {seed}", resume=resume, stop=stop,
                             validate=validate if rank == 0 else None)
    except train.TrainingOutOfMemory as err:
        raise failures.out_of_memory(err, cfg, world, layout.root, files.checkpoint) from None
    scores = evaluate_model(model, val_set, coco_gt, files, device, workers=schedule.workers, progress=progress,
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
    write_json(files.metrics, metrics)
    return metrics


TIMED_VAL_IMAGES = 4


def trained_models(cfg: RunConfig, layout: RunLayout,
                   num_classes: int) -> tuple[list[int], dict[str, list[torch.nn.Module]]]:
    """The seeds whose trained detectors are measured, and each backbone's detectors of those seeds in order.
    Paired: a seed counts only where every backbone that finished a seed finished it and kept its checkpoint."""
    finished = {name: [seed for seed in cfg.profile.seeds if layout.result(name, seed).metrics.is_file()]
                for name in cfg.backbones}
    for name, seed in ((name, seed) for name, seeds in finished.items() for seed in seeds):
        if not layout.result(name, seed).checkpoint.is_file():
            log.warning("warning: %s is gone: seed %d's trained weights are not measured, for any backbone",
                        layout.result(name, seed).checkpoint, seed)
    compared = [name for name, seeds in finished.items() if seeds]
    seeds = [seed for seed in cfg.profile.seeds if all(
        seed in finished[name] and layout.result(name, seed).checkpoint.is_file() for name in compared)]
    paths = {name: [layout.result(name, seed).checkpoint for seed in seeds] for name in compared}
    return seeds, {name: [trained_detector(cfg, name, num_classes, checkpoint.load(path)) for path in found]
                   for name, found in paths.items() if found}


def receptive_fields(cfg: RunConfig, layout: RunLayout, val_set: data.CocoDetection,
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
    write_csv(layout.receptive_field, pd.DataFrame(rows))


def execute(cfg: RunConfig, layout: RunLayout, splits: tuple[data.Split, data.Split], device: torch.device,
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
            files = layout.result(name, seed)
            done = read_json(files.metrics) if resume and files.metrics.is_file() else None
            if resume and files.diverged.is_file():
                diverged.append(f"{name} seed {seed}")
                continue  # it would diverge again: the same seed gives the same steps
            if not done:
                stop.check(f"{name} seed {seed}")
            try:
                metrics = done or run_backbone(name, seed, cfg, datasets, coco_gt, layout, device, progress,
                                               resume, stop)
            except train.TrainingDiverged as err:
                diverged.append(f"{name} seed {seed}")
                if rank == 0:
                    write_json(files.diverged, {"reason": str(err)})
                    kept = (f"its last good checkpoint ({files.checkpoint}) is kept"
                            if files.checkpoint.is_file() else "no checkpoint was due yet")
                    log.warning("warning: %s; %s; the other backbones go on", err, kept)
                continue
            if rank == 0:
                rows.append(metrics_row(metrics, seed))
                write_csv(layout.metrics, pd.DataFrame(rows))  # kept current after each backbone
                stats, trained = metrics["stats"], metrics["train"]
                log.info("%s seed %d: %d iterations in %.1f min, AP %.1f, AP50 %.1f", name, seed, trained["iterations"],
                         trained["seconds"] / 60, 100 * stats["AP"], 100 * stats["AP50"])
    if rank == 0:
        stop.check("measurement")
        seeds, trained = trained_models(cfg, layout, datasets[1].num_classes)
        receptive_fields(cfg, layout, datasets[1], trained)
        weights = {name: pretrained_file(cfg, name) for name in cfg.backbones}
        images = [datasets[1][i][0] for i in range(min(TIMED_VAL_IMAGES, len(datasets[1])))]
        timed = {name: measure.TrainedDetector(models[0], seeds[0], images) for name, models in trained.items()}
        measure.measure(cfg.backbones, cfg.profile, device, layout.root, datasets[1].num_classes, progress=progress,
                        weights=weights, trained=timed, world_size=comm.world_size())
        finished = report.load_run(layout.root)  # one bootstrap for the report and the summary
        report.write_report(finished)
    comm.destroy()
    return report.summary(finished) if rank == 0 else "", diverged


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, layout, splits, device = prepare(args)
    logs.attach_run_log(layout)  # appended to on --resume
    run_dir = layout.root
    is_main = comm.is_main()
    start = time.perf_counter()
    status = (lambda *a, **k: set_status(layout.status, *a, **k)) if is_main else (lambda *a, **k: None)
    resume_hint = f"python -m bench.run --resume {run_dir}"
    status("running")
    try:
        with train.StopRequest() as stop:
            try:
                summary, diverged = execute(cfg, layout, splits, device, progress=not args.no_progress,
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
                 len(cfg.profile.seeds), minutes, layout.report_md)
        if diverged:
            log.error("error: %s", failures.diverged(diverged, run_dir))
    return ExitStatus.DIVERGED if diverged else ExitStatus.OK


if __name__ == "__main__":
    raise SystemExit(main())
