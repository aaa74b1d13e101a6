"""Interrupted runs: SIGKILL between checkpoints or SIGTERM, then --resume, ends bit-exactly as one
uninterrupted run (CPU), with each iteration logged once."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ITERATIONS = 6
ARGS = ["--profile", "smoke", "--backbones", "resnet50", "--no-progress", "--set", f"train.iterations={ITERATIONS}",
        "--set", "train.checkpoint_every=2", "--set", "measure.dtypes=[float32]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def bench_run(*argv: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.run", *argv], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def logged_iterations(run: Path) -> list[int]:
    path = run / "seed0" / "resnet50" / "loss.csv"
    try:
        with path.open(newline="") as f:
            return [int(row["iteration"]) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []


def wait_for_iteration(process: subprocess.Popen, run: Path, iteration: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while max(logged_iterations(run), default=0) < iteration:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.02)


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "seed0" / "resnet50" / "checkpoint.pth", weights_only=True)["model"]


def loss_rows(run: Path) -> list[dict[str, str]]:
    with (run / "seed0" / "resnet50" / "loss.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_s")} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("straight")
    process = bench_run(*ARGS, "--out", str(folder / "run"), "--cache-dir", str(folder / "cache"), cwd=folder)
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    return folder / "run"


def assert_same_as(run: Path, reference: Path) -> None:
    ours, theirs = final_state(run), final_state(reference)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert loss_rows(run) == loss_rows(reference)
    assert [int(row["iteration"]) for row in loss_rows(run)] == list(range(1, ITERATIONS + 1))
    metrics = [json.loads((r / "seed0" / "resnet50" / "metrics.json").read_text())["stats"] for r in (run, reference)]
    assert metrics[0] == metrics[1]


def test_sigkill_between_checkpoints_then_resume_is_bit_exact(uninterrupted: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = bench_run(*ARGS, "--out", str(run), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    wait_for_iteration(process, run, 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = torch.load(run / "seed0" / "resnet50" / "checkpoint.pth", weights_only=True)["iteration"]
    assert saved in (2, 4) and not (run / "seed0" / "resnet50" / "metrics.json").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # killed: nobody could say more

    resumed = bench_run("--resume", str(run), "--no-progress", cwd=tmp_path)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err[-2000:]
    assert_same_as(run, uninterrupted)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(uninterrupted: Path, tmp_path: Path) -> None:
    """No checkpoint is due before the end here, so the one found can only be the save on stopping."""
    run = tmp_path / "run"
    process = bench_run(*ARGS, "--set", f"train.checkpoint_every={ITERATIONS}", "--out", str(run),
                        "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    wait_for_iteration(process, run, 1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    assert process.returncode == 130
    assert f"python -m bench.run --resume {run}" in err and "SIGTERM" in err and "Traceback" not in err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and "SIGTERM" in status["reason"]
    stopped_at = torch.load(run / "seed0" / "resnet50" / "checkpoint.pth", weights_only=True)["iteration"]
    assert 1 <= stopped_at < ITERATIONS and stopped_at == max(logged_iterations(run))  # saved after its last step

    resumed = bench_run("--resume", str(run), "--no-progress", cwd=tmp_path)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err[-2000:]
    assert_same_as(run, uninterrupted)


def test_resume_refuses_a_changed_weights_file_or_a_backbone_that_builds_differently(
        tmp_path: Path, smoke_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fairness audit is recomputed on --resume and must match the one the run recorded (no training here)."""
    import timm
    from timm.models import _registry

    from bench.errors import UsageError
    from bench.run import parse_args, prepare

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(timm.create_model("resnet50").state_dict(), weights / "resnet50.pth")
    run = tmp_path / "run"
    prepare(parse_args(["--profile", "smoke", "--backbones", "resnet50", "--pretrained-dir", str(weights),
                        "--out", str(run), "--cache-dir", str(smoke_cache)]))
    resume = parse_args(["--resume", str(run)])
    prepare(resume)  # nothing changed: accepted

    state = torch.load(weights / "resnet50.pth", weights_only=True)
    state["layer1.0.conv1.weight"] += 1e-3  # other ImageNet weights under the same name
    torch.save(state, weights / "resnet50.pth")
    with pytest.raises(UsageError, match=r"audit\.resnet50\.weights_sha256 differs .*a weights file or the backbone"):
        prepare(resume)

    # From scratch, with a timm whose resnet50 has one more bottleneck in its last stage.
    scratch = tmp_path / "scratch"
    prepare(parse_args(["--profile", "smoke", "--backbones", "resnet50", "--out", str(scratch),
                        "--cache-dir", str(smoke_cache)]))
    original = _registry._model_entrypoints["resnet50"]
    monkeypatch.setitem(_registry._model_entrypoints, "resnet50",
                        lambda pretrained=False, **kwargs: original(pretrained, **{**kwargs, "layers": (3, 4, 6, 4)}))
    with pytest.raises(UsageError, match=r"audit\.resnet50\.decayed_tensors differs"):
        prepare(parse_args(["--resume", str(scratch)]))
