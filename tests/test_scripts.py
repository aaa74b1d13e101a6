"""The analysis scripts under scripts/ read what the library writes."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import detector
from bench.settings import get_profile

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


def test_mfu_divides_achieved_flops_by_the_cards_bf16_peak(tmp_path: Path) -> None:
    """100 GFLOPs per image, batch 2, 1 ms: 200 TFLOP/s, 20.2% of an H100 SXM's 989; float32 rows are left out."""
    pd.DataFrame([{"backbone": "resnet50", "target": "detector", "module": "backbone.body", "gflops": 100.0}]).to_csv(
        tmp_path / "flops_by_module.csv", index=False)
    row = {"backbone": "resnet50", "target": "backbone", "metric": "latency", "device": "cuda",
           "device_name": "NVIDIA H100 80GB HBM3", "channels_last": True, "compiled": False, "batch_size": 2,
           "latency_ms_median": 1.0}
    pd.DataFrame([{**row, "dtype": "bfloat16"}, {**row, "dtype": "float32"}]).to_csv(
        tmp_path / "measurements.csv", index=False)
    done = subprocess.run([sys.executable, "scripts/mfu.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout.splitlines()[2:] == ["| resnet50 | bfloat16 | True | False | 2 | 1.00 | 200.0 | 20.2% |"]


@pytest.mark.parametrize("name, peak", [("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("NVIDIA H200 NVL", 835e12), ("NVIDIA GeForce RTX 4090", None)])
def test_mfu_knows_a_card_by_its_whole_name(name: str, peak: float | None) -> None:
    spec = importlib.util.spec_from_file_location("mfu", ROOT / "scripts" / "mfu.py")
    mfu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mfu)
    assert mfu.peak(name) == peak


def test_gpu_script_parses_and_refuses_a_too_old_torch_in_one_line(tmp_path: Path) -> None:
    subprocess.run(["bash", "-n", "scripts/gpu_figures.sh"], cwd=ROOT, check=True)
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('__version__ = "2.3.1+cu121"\n')
    done = subprocess.run(["bash", "scripts/gpu_figures.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path), "OUT_DIR": str(tmp_path / "out")})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: torch 2.3.1+cu121 is older than 2.4, which detbench needs"]
    assert not (tmp_path / "out").exists()


def test_calibration_prints_the_false_verdict_table() -> None:
    """--quick: the old percentile interval calls a zero difference often, the new one never at 2 seeds."""
    done = subprocess.run([sys.executable, "scripts/calibration.py", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = {line.split(" | ")[0].lstrip("| "): [float(x) for x in line.strip(" |").split(" | ")[1:]]
            for line in done.stdout.splitlines()[3:]}
    old_2, new_2, new_3, new_5 = (rows["training noise only"][i] for i in (0, 3, 4, 5))
    assert old_2 > 0.3 and new_2 == 0.0  # two seeds: [min, max] of two differences; new: provisional
    assert new_3 < 0.1 and new_5 < 0.1  # nominal 0.05 with 200 comparisons (Monte Carlo SE 0.015)
