"""Shared fixtures: one smoke-profile run folder for every test that needs a finished run.

Imports of the training side happen inside the fixtures, so that tests that need none of it
(tests/test_cuda.py on a GPU machine without pycocotools) can be collected.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SMOKE_BACKBONES = "detnet59,resnet50"

# Every test in this process runs torch on one thread, alone or in the suite alike: CI's 2 shared cores run
# 2 threads ~10-40x slower. Subprocesses choose their own (OMP_NUM_THREADS); a test needing another sets it.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def smoke_data(smoke_cache: Path):
    """The smoke profile's synthetic set (8 train / 4 val images of 128 px)."""
    from bench import data
    from bench.settings import get_profile

    return data.make_synthetic(get_profile("smoke").synthetic, smoke_cache)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, smoke_cache: Path) -> Path:
    """A finished `bench.run --profile smoke` folder on two backbones and two seeds, validated every iteration."""
    from bench.run import main as run_main

    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    argv = ["--profile", "smoke", "--backbones", SMOKE_BACKBONES, "--seeds", "2", "--set", "train.eval_every=1",
            "--out", str(run_dir), "--cache-dir", str(smoke_cache), "--no-progress"]
    assert run_main(argv) == 0
    return run_dir
