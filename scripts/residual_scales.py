"""How far a run's residual blocks have left the identity: the scale of each block's last BatchNorm.

    python scripts/residual_scales.py RUN_DIR

A ResNet-style block computes x + bn3(...). timm starts bn3's scale at 0 (`zero_init_last`), so
every block starts as the identity and the backbone as its stem and shortcut projections; the
scales after training say how much of the residual branches the detector uses. Reads each
seed's `checkpoint.pth` (left out of committed run folders, so run it on the run's own machine)
and prints, per backbone and seed, the smallest and largest per-block mean |scale| and the
largest single |scale|, beside the shortcut projections' mean |scale| for comparison.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from bench.layout import RunLayout

BLOCK_SCALE = re.compile(r"^backbone\.body\.layer\d+\.\d+\.bn3\.weight$")
SHORTCUT_SCALE = re.compile(r"^backbone\.body\.layer\d+\.0\.downsample\.1\.weight$")


def scales(checkpoint: Path) -> dict[str, float] | None:
    """The block-end and shortcut scales of one checkpoint; None for a backbone without ResNet-style blocks."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["model"]
    blocks = [value.abs() for key, value in state.items() if BLOCK_SCALE.match(key)]
    shortcuts = [value.abs().mean().item() for key, value in state.items() if SHORTCUT_SCALE.match(key)]
    if not blocks:
        return None
    means = [value.mean().item() for value in blocks]
    return {"blocks": len(blocks), "block_mean_min": min(means), "block_mean_max": max(means),
            "block_max": max(value.max().item() for value in blocks),
            "shortcut_mean": sum(shortcuts) / len(shortcuts) if shortcuts else float("nan")}


def main(run_dir: str) -> int:
    checkpoints = list(RunLayout(Path(run_dir)).checkpoints())
    if not checkpoints:
        print(f"error: no seed*/<backbone>/checkpoint.pth under {run_dir}", file=sys.stderr)
        return 2
    print("| backbone | seed | blocks | mean block-end scale, min-max over blocks | largest | shortcut projections' mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for backbone, seed, checkpoint in checkpoints:
        row = scales(checkpoint)
        if row is None:
            print(f"| {backbone} | {seed} | 0 | no ResNet-style blocks (backbone.body.layer*.*.bn3) | – | – |")
            continue
        print(f"| {backbone} | {seed} | {row['blocks']} | {row['block_mean_min']:.4f}-{row['block_mean_max']:.4f} "
              f"| {row['block_max']:.4f} | {row['shortcut_mean']:.4f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
