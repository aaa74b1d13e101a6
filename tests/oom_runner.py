"""`python -m bench.run` whose third training step runs out of CUDA memory: how tests/test_failures.py meets
that failure on a CPU, without a test hook in the library."""
from __future__ import annotations

import sys

import torch

from bench import run, train

real_step = train.train_step
steps = 0


def step_that_runs_out(*args, **kwargs):
    global steps
    steps += 1
    if steps == 3:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return real_step(*args, **kwargs)


train.train_step = step_that_runs_out
raise SystemExit(run.main(sys.argv[1:]))
