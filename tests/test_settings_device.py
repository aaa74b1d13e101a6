"""Settings resolved for the device before any work: `auto` decided once, what the device cannot do refused in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import ConfigError
from bench.settings import RunConfig, build
from bench.settings.device import resolve
from bench.train import native_bf16


def test_auto_precision_is_resolved_on_a_copy() -> None:
    cfg = build("smoke")
    resolved = resolve(cfg, torch.device("cpu"))
    assert cfg.profile.train.precision == "auto"  # the checked settings are never changed afterwards
    assert resolved.profile.train.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert isinstance(resolved, RunConfig) and resolved.profile.detector == cfg.profile.detector


def test_fp16_on_a_cpu_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device") as err:
        resolve(build("smoke", overrides=["train.precision=fp16"]), torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_bench_measure_refuses_fp16_on_a_cpu_before_any_work(tmp_path: Path, capsys) -> None:
    from bench.measure.__main__ import main

    out = tmp_path / "measured"
    assert main(["--backbones", "resnet50", "--profile", "smoke", "--set", "train.precision=fp16", "--device", "cpu",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == "error: train.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU\n"
    assert "Traceback" not in err and not out.exists()
