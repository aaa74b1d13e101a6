"""torchrun with 2 gloo processes on the CPU, rendezvous by c10d on localhost as on a cluster."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent
# this checkout's bench, whichever one the environment has installed
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT.parent)}


def torchrun(*argv: str, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", "--rdzv-id=detbench-test", *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)


@pytest.mark.slow
def test_distributed_evaluation_equals_one_process(smoke_run: Path, tmp_path: Path) -> None:
    """Each process predicts its shard, rank 0 restores image order and scores once: exactly what one
    process gives (both with one thread per process, as thread counts change float sums)."""
    for processes in (1, 2):
        done = torchrun(str(ROOT / "dist_eval.py"), str(smoke_run), str(tmp_path / f"out{processes}"), cwd=tmp_path,
                        processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "out1", tmp_path / "out2"
    assert len(json.loads((one / "detections.json").read_text())) > 0
    assert (two / "detections.json").read_text() == (one / "detections.json").read_text()
    assert (two / "analysis.json").read_text() == (one / "analysis.json").read_text()
    assert (two / "evaluation.npz").read_bytes() == (one / "evaluation.npz").read_bytes()


# Every anchor and every proposal is sampled, so neither process draws a random subset (torchvision's
# samplers draw from each process's own generator), and norm is frozen, since BatchNorm without
# SyncBatchNorm (CUDA only) would normalise each process's image alone.
EQUAL = ["--set", "detector.norm=frozen", "--set", "detector.rpn_batch_size_per_image=100000",
         "--set", "detector.box_batch_size_per_image=100000", "--set", "measure.dtypes=[float32]",
         "--set", "train.precision=fp32"]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path, smoke_cache: Path) -> None:
    """Same global batch of 2: one process with both images, or two with one each (DDP averages the
    gradients). Equal up to the order of floating-point sums in DDP's all-reduce and in convolutions
    over a batch of 1 instead of 2: relative 1e-4 after two SGD steps."""
    args = ["-m", "bench.run", "--profile", "smoke", "--backbones", "resnet50", "--cache-dir", str(smoke_cache),
            "--no-progress", *EQUAL]
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], cwd=tmp_path,
                            capture_output=True, text=True, env=ENV)
    assert single.returncode == 0, single.stderr[-3000:]
    done = torchrun(*args, "--out", str(tmp_path / "two"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no stray folders from rank 1
    one, two = (torch.load(tmp_path / run / "seed0" / "resnet50" / "checkpoint.pth", weights_only=True)["model"]
                for run in ("one", "two"))
    for key in one:
        assert torch.allclose(one[key].float(), two[key].float(), rtol=1e-4, atol=1e-6), key
    assert (tmp_path / "two" / "report.md").is_file()


FAULTS = ["--profile", "smoke", "--backbones", "resnet50", "--no-progress", "--set", "train.precision=fp32",
          "--set", "measure.dtypes=[float32]", "--set", "measure.batch_sizes=[1]", "--set", "measure.channels_last=[false]",
          "--set", "measure.repeats=1", "--set", "measure.min_run_time=0.05"]


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_with_its_name(tmp_path: Path, smoke_cache: Path) -> None:
    """Rank 1's loss turns NaN at iteration 1: both processes stop after that step, agreeing on why,
    instead of rank 0 waiting for rank 1 until the collective timeout."""
    done = torchrun(str(ROOT / "dist_faults.py"), "nan", "1", *FAULTS, "--cache-dir", str(smoke_cache),
                    "--out", str(tmp_path / "run"), cwd=tmp_path)
    reason = "train resnet50 seed 0: loss_classifier became nan at iteration 1 on rank 1 (of 2 processes"
    assert f"warning: {reason}" in done.stderr, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "seed0" / "resnet50" / "diverged.json").read_text())["reason"].startswith(
        reason)


ITERATIONS = ["--set", "train.iterations=6", "--set", "train.checkpoint_every=2"]


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_resume_ends_as_if_uninterrupted(tmp_path: Path, smoke_cache: Path) -> None:
    """SIGKILL of rank 1 at iteration 4: rank 0 stops at once with one line and exit status 75, the
    checkpoint of iteration 2 stays, and --resume under torchrun ends bit for bit as an uninterrupted
    run (gloo on the CPU; each rank resumes its own RNG, which its RoI sampling draws from)."""
    args = [*FAULTS, *ITERATIONS, "--cache-dir", str(smoke_cache)]
    killed = torchrun(str(ROOT / "dist_faults.py"), "kill", "4", *args, "--out", str(tmp_path / "killed"), cwd=tmp_path)
    lines = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: rank 0 of 2 lost rank 1 of the job ("), killed.stderr[-3000:]
    folder = tmp_path / "killed" / "seed0" / "resnet50"
    assert torch.load(folder / "checkpoint.pth", weights_only=True)["iteration"] == 2
    assert json.loads((tmp_path / "killed" / "status.json").read_text())["state"] == "failed"
    resumed = torchrun("-m", "bench.run", "--resume", str(tmp_path / "killed"), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = torchrun("-m", "bench.run", *args, "--out", str(tmp_path / "straight"), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    one, two = (torch.load(tmp_path / run / "seed0" / "resnet50" / "checkpoint.pth", weights_only=True)["model"]
                for run in ("killed", "straight"))
    assert all(torch.equal(one[key], two[key]) for key in one)
