"""README promises with no module test of their own: atomic writes, weight-decay fairness and its audit,
unpickling refused, `--seed N`, exit codes and status.json, and the training step `bench.measure` times."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import bench.measure
from backbones import create_backbone
from backbones.factory import WeightsError
from bench import run, settings, train
from bench.detector import build_detector
from bench.files import atomic_write, write_json
from bench.settings import get_profile

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@pytest.mark.parametrize("where", ["while writing", "while flushing to disk"])
def test_an_interrupted_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      where: str) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"AP": 0.5})

    def half_then_fail(file) -> None:
        file.write(b'{"AP": 0.')
        if where == "while writing":
            raise KeyboardInterrupt

    if where == "while flushing to disk":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises((KeyboardInterrupt, OSError)):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"AP": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


def test_norm_weights_and_biases_get_their_own_decay(smoke_run: Path) -> None:
    """Told apart by module type, not by the rule the code uses (1-D or bias); the audit counts the same."""
    cfg = get_profile("smoke").train
    cfg.weight_decay, cfg.norm_bias_weight_decay = 1e-4, 0.5  # distinct, so a parameter in no group shows
    for name in ("detnet59", "resnet50"):
        model = build_detector(name, 3, get_profile("smoke").detector)
        decay_of = {id(p): group["weight_decay"] for group in train.build_optimizer(model, cfg).param_groups
                    for p in group["params"]}
        expected = {id(p): cfg.norm_bias_weight_decay if isinstance(module, NORMS) or key == "bias" else cfg.weight_decay
                    for module in model.modules() for key, p in module.named_parameters(recurse=False)
                    if p.requires_grad}
        assert decay_of == expected, name
        audit = settings.build(file=smoke_run / "config.yaml").audit[name]
        assert audit.decayed_tensors == sum(v == cfg.weight_decay for v in expected.values()), name


def test_the_audit_records_the_sha256_of_the_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(timm.create_model("resnet50").state_dict(), weights / "resnet50.pth")  # ~100 MB: many read blocks
    cfg = settings.build("smoke", None, {"pretrained_dir": str(weights), "backbones": ["resnet50"]}, [])
    audit = run.audit(cfg, "resnet50", 3)
    assert audit.weights_sha256 == hashlib.sha256((weights / "resnet50.pth").read_bytes()).hexdigest()
    assert audit.weights_file == str(weights / "resnet50.pth") and audit.norm == "frozen" and audit.frozen_stem


class Payload:
    """Unpickling this creates the marker file: what a malicious `.pth` could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_pickled_object_in_a_pth_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    state = timm.create_model("resnet50").state_dict()
    state["fc.bias"] = Payload(marker)
    torch.save(state, tmp_path / "resnet50.pth")
    with pytest.raises(WeightsError) as refused:
        create_backbone("resnet50", tmp_path / "resnet50.pth")
    assert not marker.exists()
    assert "not a readable .pth/.safetensors state dict" in str(refused.value)


@pytest.mark.parametrize("flag, value, seeds", [("--seed", "3", [3]), ("--seeds", "3", [0, 1, 2]),
                                                ("--seeds", "4,7", [4, 7])])
def test_seed_options(flag: str, value: str, seeds: list[int]) -> None:
    assert run.config_from_args(run.parse_args(["--profile", "smoke", flag, value])).profile.seeds == seeds


@pytest.fixture()
def unfinished(smoke_run: Path, tmp_path: Path) -> Path:
    """The session's run with its last backbone-seed not yet trained."""
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("tables", "plots", "report.*", "measurements.csv"))
    shutil.rmtree(copy / "seed1" / "resnet50")
    return copy


def test_ctrl_c_saves_a_checkpoint_and_exits_130(unfinished: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    real = run.run_backbone

    def pressed_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), 2)  # SIGINT, as Ctrl-C sends it, caught by the run's handler
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "run_backbone", pressed_ctrl_c)
    assert run.main(["--resume", str(unfinished), "--no-progress"]) == 130
    assert f"python -m bench.run --resume {unfinished}" in capsys.readouterr().err
    status = json.loads((unfinished / "status.json").read_text())
    assert status["state"] == "interrupted" and "SIGINT" in status["reason"]
    assert torch.load(unfinished / "seed1" / "resnet50" / "checkpoint.pth", weights_only=True)["iteration"] == 1


def test_a_crash_is_recorded_and_the_finished_backbones_survive(unfinished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    finished = {path: path.read_bytes() for path in unfinished.glob("seed*/*/*") if path.is_file()}

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory in the box head")

    monkeypatch.setattr(run, "run_backbone", crash)
    with pytest.raises(RuntimeError):
        run.main(["--resume", str(unfinished), "--no-progress"])
    status = json.loads((unfinished / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"] == "RuntimeError: out of memory in the box head"
    assert {path: path.read_bytes() for path in finished} == finished


class ReachedMeasurement(Exception):
    """Raised where the run would measure its backbones: the training loop is over."""


def test_resume_skips_a_diverged_backbone(unfinished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = unfinished / "seed1" / "resnet50"
    folder.mkdir()
    write_json(folder / "diverged.json", {"reason": "train resnet50 seed 1: loss_box_reg became nan at iteration 2"})
    monkeypatch.setattr(run, "run_backbone", lambda *a, **k: pytest.fail("a diverged backbone was trained again"))
    monkeypatch.setattr(run, "trained_models", lambda *a, **k: (_ for _ in ()).throw(ReachedMeasurement()))
    with pytest.raises(ReachedMeasurement):
        run.main(["--resume", str(unfinished), "--no-progress"])
    assert sorted(p.name for p in folder.iterdir()) == ["diverged.json"]


def test_measure_times_the_training_step_with_the_runs_weights_precision_and_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = timm.create_model("resnet50")
    torch.save(source.state_dict(), tmp_path / "resnet50.pth")
    profile = get_profile("smoke")
    profile.train.precision, profile.train.channels_last = "bf16", True
    seen = []
    real = bench.measure.train_step

    def spy(model, optimizer, scaler, images, targets, precision):
        body = model.backbone.body
        seen.append((precision, torch.equal(body.layer3[0].conv2.weight, source.layer3[0].conv2.weight),
                     body.conv1.weight.requires_grad, body.layer3[0].conv2.weight.is_contiguous(
                         memory_format=torch.channels_last)))
        return real(model, optimizer, scaler, images, targets, precision)

    monkeypatch.setattr(bench.measure, "train_step", spy)
    rows = []
    bench.measure.training_costs("resnet50", profile, torch.device("cpu"), 3, 1, rows.append, tmp_path / "resnet50.pth")
    assert seen[0] == ("bf16", True, False, True)  # weights loaded, stem frozen, channels-last, bf16 autocast
    assert {row["dtype"] for row in rows} == {"bfloat16"} and all(row["channels_last"] for row in rows)
