"""`train.precision`: `auto` picks bf16 only where the hardware computes it, and fp16 needs CUDA.

The machine's capabilities are faked one by one (oneDNN's check, the CPU's AVX512-BF16 and AMX
flags, its architecture, the GPU's), so both answers are tested on any machine.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import train
from bench.run import main

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_cpu(monkeypatch: pytest.MonkeyPatch, machine: str = "x86_64", onednn_bf16: bool = True,
             avx512_bf16: bool = False, amx: bool = False) -> None:
    monkeypatch.setattr(train.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize("machine, onednn_bf16, avx512_bf16, amx, expected", [
    ("x86_64", True, True, False, "bf16"),  # AVX512-BF16 (Cooper Lake, Zen 4)
    ("x86_64", True, False, True, "bf16"),  # AMX (Sapphire Rapids)
    ("x86_64", True, False, False, "fp32"),  # plain AVX-512: oneDNN says yes, but only emulates bf16
    ("AMD64", True, False, False, "fp32"),  # the same CPU as Windows names it
    ("x86_64", False, False, False, "fp32"),  # no AVX-512 at all
    ("aarch64", True, False, False, "bf16"),  # an Arm CPU with bf16 instructions (oneDNN checks them)
    ("aarch64", False, False, False, "fp32"),
])
def test_auto_precision_on_the_cpu(monkeypatch: pytest.MonkeyPatch, machine: str, onednn_bf16: bool,
                                   avx512_bf16: bool, amx: bool, expected: str) -> None:
    fake_cpu(monkeypatch, machine, onednn_bf16, avx512_bf16, amx)
    assert train.native_bf16(CPU) == (expected == "bf16")
    assert train.resolve_precision("auto", CPU) == expected


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_a_gpu_asks_for_bf16_without_emulation(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(
        including_emulation) or native)
    fake_cpu(monkeypatch, avx512_bf16=not native)  # the CPU's answer must not leak into the GPU's
    assert train.resolve_precision("auto", CUDA) == ("bf16" if native else "fp32")
    assert asked == [False]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    fake_cpu(monkeypatch, onednn_bf16=False)
    assert train.resolve_precision(precision, CPU) == precision


def test_fp16_on_the_cpu_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train.resolve_precision("fp16", CPU)
    assert train.resolve_precision("fp16", CUDA) == "fp16"
    out = tmp_path / "run"
    assert main(["--profile", "smoke", "--set", "train.precision=fp16", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == "error: train.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU\n"
    assert not out.exists()
