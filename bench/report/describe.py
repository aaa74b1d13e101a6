"""The report's sentences that depend on the run: what was run, on what, and what it concludes."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..settings import RunConfig
from ..significance import LEVEL, POWER, PRIMARY, Comparison
from .accuracy import like_for_like
from .cost import measured_device
from .intervals import intervals
from .load import Run, load_paper


def describe_data(config: RunConfig) -> str:
    data = config.data
    if data.train_ann is None:
        s = config.profile.synthetic
        return f"embedded synthetic set ({s.num_train} train / {s.num_val} val images, {s.image_size} px)"
    return f"train {data.train_ann} ({data.train_images}), val {data.val_ann} ({data.val_images})"


def _describe_device(run: Run) -> str:
    env = run.environment or {}
    device, name = str(run.config.device), env.get("device_name") or measured_device(run)
    details = [name] if name != device else []
    details += [f"{env['torch_threads']} torch threads"] if env.get("torch_threads") else []
    return device + (f" ({', '.join(details)})" if details else "")


def _describe_software(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{key} {env[key]}" for key in ("torch", "torchvision", "timm", "python") if env.get(key))
    return f"Software: {versions}; git commit {env.get('git_commit') or 'unknown'}"


def _describe_training(run: Run) -> str:
    train = run.config.profile.train
    extras = [f"{train.precision} precision" if run.saved.recorded("profile.train.precision") else "",
              "channels-last" if train.channels_last else ""]
    extra = "; ".join(e for e in extras if e)
    return (f"{train.iterations} iterations at batch {train.batch_size} (base lr {train.base_lr:g} at batch "
            f"{train.base_batch}, scaled linearly{'; ' + extra if extra else ''})")


def describe_run(run: Run) -> list[str]:
    """What was run, one line per aspect, from config.yaml and environment.json."""
    cfg, profile = run.config, run.config.profile
    det = profile.detector
    weights = (f"ImageNet weights from `{cfg.pretrained_dir}`" if run.pretrained
               else "trained from scratch (no ImageNet weights)")
    seeds = ", ".join(map(str, run.seeds))
    lines = [
        f"Profile: {profile.name}: {_describe_training(run)}, detector input: short side "
        f"{det.min_size} px, long side at most {det.max_size} px",
        f"Detector geometry: anchors {', '.join(map(str, det.anchor_sizes))} px on P2-P6; RoIs pooled from "
        f"P2-P5 by k = floor(4 + log2(sqrt(wh) / {det.roi_canonical_scale:g}))",
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
    train, det = run.config.profile.train, run.config.profile.detector
    return (
        "The paper's numbers come from COCO (80 categories, short side 800 px, 180k iterations at batch 16) "
        "with ImageNet-pretrained backbones (Table 1) or from scratch (Table 2). "
        f"This run: {describe_data(run.config)}, {train.iterations} iterations at batch {train.batch_size}, "
        f"{det.min_size} px input. So only the direction and pattern of the differences can be compared "
        "(for instance, whether DetNet-59 gains most on large objects at high IoU and in small-object recall), "
        "not absolute AP."
    )


def _seeds_needed(comparison: Comparison) -> str:
    """How many seeds would resolve the observed AP difference, 0.5 and 1.0 AP, from this run's noise."""
    observed = comparison.result(PRIMARY).difference
    needed = [(f"the observed {observed:+.1f}", comparison.seeds_needed(PRIMARY)),
              *((f"{effect:.1f}", comparison.seeds_needed(PRIMARY, effect)) for effect in (0.5, 1.0))]
    return (f"Seeds to resolve a true AP difference at {LEVEL:.0%} with {POWER:.0%} power, from this run's training "
            "and image noise (noncentral t): " + ", ".join(f"{n} for {what}" for what, n in needed) + ".")


def verdicts(run: Run) -> list[str]:
    """One sentence per pair on AP, the primary comparison: difference, interval, verdict, seeds that would settle it."""
    lines = []
    for (a, b), comparison in intervals(run).pairs.items():
        r = comparison.result(PRIMARY)
        meaning = {"ahead": f"{a} is ahead", "behind": f"{a} is behind"}.get(r.verdict, r.verdict)
        seeds = f"{r.seeds} seed{'s' if r.seeds > 1 else ''}"
        if np.isnan(r.low):
            lines.append(f"{a} − {b}: {PRIMARY} {r.difference:+.1f} points ({seeds}): {meaning}.")
            continue
        noise = ("training and image noise" if r.seeds > 1
                 else "image noise only: one seed cannot show training noise, run more seeds (--seeds 3)")
        line = (f"{a} − {b}: {PRIMARY} {r.difference:+.1f} points, {LEVEL:.0%} interval [{r.low:+.1f}, "
                f"{r.high:+.1f}], p = {r.p:.2g} ({seeds}; {noise}): {meaning}.")
        lines.append(line + ("" if r.seeds < 2 else " " + _seeds_needed(comparison)))
    return lines
