"""The analysis scripts under scripts/ read what the library writes."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import detector
from bench.config import get_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("zero_init_last, expected", [(True, "0.0000-0.0000"), (False, "1.0000-1.0000")])
def test_residual_scales_reads_a_checkpoint(tmp_path: Path, zero_init_last: bool, expected: str) -> None:
    cfg = replace(get_profile("smoke").detector, zero_init_last=zero_init_last)
    model = detector.build_detector("resnet50", 3, cfg)
    (tmp_path / "seed0" / "resnet50").mkdir(parents=True)
    torch.save({"model": model.state_dict()}, tmp_path / "seed0" / "resnet50" / "checkpoint.pth")
    done = subprocess.run([sys.executable, "scripts/residual_scales.py", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == f"| resnet50 | 0 | 16 | {expected} | {expected[:6]} | 1.0000 |"


def test_residual_scales_refuses_a_folder_without_checkpoints(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "scripts/residual_scales.py", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == f"error: no seed*/<backbone>/checkpoint.pth under {tmp_path}"
