"""What a measurement depends on besides the model: versions, machine, threads, code version.

torch's own report, `torch.utils.collect_env.get_env_info()`, gives the torch, CUDA, Python,
platform and CPU facts; this module adds what it lacks (torchvision and timm versions, torch
threads, logical cores, the device used, TF32 flags, the git commit, the time) and writes the keys of
environment.json that `bench.report` reads.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision

from .precision import tf32_flags

# get_env_info runs pip, lscpu, nvidia-smi and other tools, with no timeout of its own.
COLLECT_ENV_TIMEOUT_S = 60
_COLLECT_ENV = (
    "import json; from torch.utils.collect_env import get_env_info; print(json.dumps(get_env_info()._asdict()))"
)


@functools.cache
def torch_env() -> dict[str, Any]:
    """`torch.utils.collect_env.get_env_info()` as a dict, collected once per process; {} if it fails.

    It runs in a child process, which a timeout can kill: the tools it calls could hang (none
    uses the network: pip only lists), and it would initialise CUDA and set an environment
    variable in this one. The C locale keeps lscpu's field names in English.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _COLLECT_ENV], capture_output=True, text=True, check=True,
            timeout=COLLECT_ENV_TIMEOUT_S, env={**os.environ, "LC_ALL": "C"},
        )
        return json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        warnings.warn(f"torch.utils.collect_env failed, environment.json lacks its facts: {err}", stacklevel=2)
        return {}


def cpu_model() -> str:
    """The CPU's marketing name, from collect_env's CPU report ("Model name:" in lscpu, "Name:" on
    Windows); else what `platform` knows, often just the architecture."""
    found = re.search(r"^[ \t]*(?:Model name|Name):[ \t]*(.+?)[ \t]*$", torch_env().get("cpu_info") or "", re.MULTILINE)
    return found.group(1) if found else platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def git_commit() -> str | None:
    """The repository's HEAD, "+dirty" when tracked files differ from it; None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


def collect_environment(device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """The record written to environment.json; facts collect_env could not give are None."""
    env = torch_env()
    cuda = device.type == "cuda"
    return {
        "torch": env.get("torch_version"),
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": env["python_version"].split()[0] if env.get("python_version") else None,  # "3.11.7 (main, ..."
        "platform": env.get("python_platform"),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": device_name(device),
        "cuda": env.get("cuda_compiled_version") if cuda else None,
        # collect_env only lists the libcudnn files it finds on disk, not the one torch loaded
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        **tf32_flags(),  # the process's defaults; float32 rows turn TF32 off, tf32 rows on
        "git_commit": git_commit(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
