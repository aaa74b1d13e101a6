"""Run under torchrun by tests/test_distributed.py: `bench.run` whose last rank meets a fault at one iteration.

    dist_faults.py nan|kill ITERATION BENCH_RUN_ARGS...

`nan` makes that rank's loss_classifier NaN; `kill` SIGKILLs that rank after the step, as the OOM
killer or a lost node would.
"""
from __future__ import annotations

import os
import signal
import sys

import torch

from bench import run, train


def main(fault: str, iteration: str, *argv: str) -> int:
    step, calls = train.train_step, []

    def faulty_step(*args, **kwargs):
        loss, losses = step(*args, **kwargs)
        calls.append(None)
        if len(calls) == int(iteration) and int(os.environ["RANK"]) == int(os.environ["WORLD_SIZE"]) - 1:
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            losses = {**losses, "loss_classifier": torch.tensor(float("nan"))}
            loss = sum(losses.values())
        return loss, losses

    train.train_step = faulty_step
    return run.main(list(argv))


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
