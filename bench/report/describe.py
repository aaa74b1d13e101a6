"""The report's sentences that depend on the run: what was run, on what, and what it concludes."""
from __future__ import annotations

from typing import Any

from ..bootstrap import METRICS
from .accuracy import like_for_like
from .cost import measured_device
from .intervals import LEVEL, intervals, verdict_text
from .load import Run, load_paper


def describe_data(config: dict[str, Any]) -> str:
    data = config["data"]
    if data["train_ann"] is None:
        s = config["profile"]["synthetic"]
        return f"embedded synthetic set ({s['num_train']} train / {s['num_val']} val images, {s['image_size']} px)"
    return f"train {data['train_ann']} ({data['train_images']}), val {data['val_ann']} ({data['val_images']})"


def _describe_device(run: Run) -> str:
    env = run.environment or {}
    device, name = str(run.config["device"]), env.get("device_name") or measured_device(run)
    details = [name] if name != device else []
    details += [f"{env['torch_threads']} torch threads"] if env.get("torch_threads") else []
    return device + (f" ({', '.join(details)})" if details else "")


def _describe_software(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{key} {env[key]}" for key in ("torch", "torchvision", "timm", "python") if env.get(key))
    return f"Software: {versions}; git commit {env.get('git_commit') or 'unknown'}"


def _describe_training(train: dict[str, Any]) -> str:
    extras = [f"{train['precision']} precision" if "precision" in train else "",
              "channels-last" if train.get("channels_last") else ""]
    extra = "; ".join(e for e in extras if e)
    return (f"{train['iterations']} iterations at batch {train['batch_size']} (base lr {train['base_lr']:g} at batch "
            f"{train['base_batch']}, scaled linearly{'; ' + extra if extra else ''})")


def describe_run(run: Run) -> list[str]:
    """What was run, one line per aspect, from config.yaml and environment.json."""
    cfg, profile = run.config, run.config["profile"]
    det = profile["detector"]
    weights = (f"ImageNet weights from `{cfg['pretrained_dir']}`" if run.pretrained
               else "trained from scratch (no ImageNet weights)")
    seeds = ", ".join(map(str, run.seeds))
    lines = [
        f"Profile: {profile['name']}: {_describe_training(profile['train'])}, detector input: short side "
        f"{det['min_size']} px, long side at most {det['max_size']} px",
        f"Detector geometry: anchors {', '.join(map(str, det['anchor_sizes']))} px on P2-P6; RoIs pooled from "
        f"P2-P5 by k = floor(4 + log2(sqrt(wh) / {det['roi_canonical_scale']:g}))",
        f"Data: {describe_data(cfg)}",
        f"Backbones: {', '.join(run.backbones)}; {weights}",
        f"Training seed{'s' if len(run.seeds) > 1 else ''}: {seeds}; device: {_describe_device(run)}",
    ]
    for source in run.sources:
        if "evaluated_on" in source:
            lines.append(f"Re-evaluated by `bench.evaluate --run` from the checkpoints of `{source['path']}` on "
                         f"`{source['evaluated_on']}`")
    merged = [s for s in run.sources if "evaluated_on" not in s]
    if merged:
        lines.append("Merged by `bench.compare` from " + ", ".join(f"`{s['path']}`" for s in merged))
    return lines + ([_describe_software(run.environment)] if run.environment else [])


def data_warnings(run: Run) -> list[str]:
    return list((run.data_report or {}).get("warnings", []))


def like_for_like_sentence(run: Run) -> str:
    paper = load_paper()[like_for_like(run)]
    why = "started from ImageNet weights" if run.pretrained else "trained its backbones from scratch"
    return f"This run {why}, so the like-for-like paper rows are {paper['source']} ({paper['setting']})."


def caveat(run: Run) -> str:
    train, det = run.config["profile"]["train"], run.config["profile"]["detector"]
    return (
        "The paper's numbers come from COCO (80 categories, short side 800 px, 180k iterations at batch 16) "
        "with ImageNet-pretrained backbones (Table 1) or from scratch (Table 2). "
        f"This run: {describe_data(run.config)}, {train['iterations']} iterations at batch {train['batch_size']}, "
        f"{det['min_size']} px input. So only the direction and pattern of the differences can be compared "
        "(for instance, whether DetNet-59 gains most on large objects at high IoU and in small-object recall), "
        "not absolute AP."
    )


def verdicts(run: Run) -> list[str]:
    """One sentence per pair on AP: the difference, its interval and what it means."""
    lines = []
    for (a, b), interval in intervals(run).pairs.items():
        i = METRICS.index("AP")
        words = verdict_text(interval, "AP")
        meaning = {"ahead": f"{a} is ahead", "behind": f"{a} is behind"}.get(words, words)
        seeds = f"{interval.seeds} seed{'s' if interval.seeds > 1 else ''}"
        noise = ("training and evaluation noise" if interval.seeds > 1
                 else "evaluation noise only: training noise not measured, run more seeds (--seeds 3)")
        lines.append(f"{a} − {b}: AP {interval.difference[i]:+.1f} points, {LEVEL:.0%} interval "
                     f"[{interval.low[i]:+.1f}, {interval.high[i]:+.1f}] ({seeds}; {noise}): {meaning}.")
    return lines
