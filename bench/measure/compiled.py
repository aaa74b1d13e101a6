"""Latency of a `torch.compile`d model that was really compiled, or a row that says it was not.

torch.compile's recompile limit (8) is counted per code object, and copies of a model share
their code objects: compiling setting after setting, later models and batch sizes silently
run eager (dynamo only logs a warning). So each setting compiles a fresh copy after
`torch.compiler.reset()`, with static shapes, and counts the graphs dynamo hands to the
backend (its `unique_graphs` counter). No graph, a compilation error, the recompile limit, or
a recompilation while timed (which times compilation) make the row "not compiled", with a note.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch._dynamo
from torch import nn
from torch._dynamo import exc as dynamo_errors

BACKEND = "inductor"
# What a failed compilation raises: backend errors come wrapped in dynamo's; the limit's error was renamed.
COMPILE_ERRORS = tuple(getattr(dynamo_errors, name) for name in (
    "TorchDynamoException", "FailOnRecompileLimitHit", "FailOnCacheLimitHit") if hasattr(dynamo_errors, name))


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@contextmanager
def recompile_limit_raises() -> Iterator[None]:
    """Hitting the recompile limit raises instead of falling back to eager (the flag's name varies by release)."""
    names = [name for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit")
             if hasattr(torch._dynamo.config, name)]
    with torch._dynamo.config.patch(**{names[0]: True}) if names else torch._dynamo.config.patch():
        yield


def compiled_timing(
    model: nn.Module, call: Callable[[nn.Module], Any], time: Callable[[Callable[[], Any]], Any],
    backend: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Compile a fresh copy of `model`, call it once to compile, then `time(lambda: call(compiled))`.

    Returns (the timing, row fields): `compiled` and `compiled_graphs` when it ran compiled,
    else (None, `compiled` False and a `note` saying why). `backend`: `BACKEND` unless given.
    Out-of-memory errors are raised.
    """
    torch.compiler.reset()
    compiled = torch.compile(copy.deepcopy(model), backend=backend or BACKEND, dynamic=False)
    before = graphs_compiled()
    try:
        with recompile_limit_raises():
            call(compiled)
            graphs = graphs_compiled() - before
            if graphs == 0:
                return None, _not_compiled("torch.compile produced no graph")
            timing = time(lambda: call(compiled))
            recompiled = graphs_compiled() - before > graphs
    except torch.cuda.OutOfMemoryError:
        raise
    except COMPILE_ERRORS as err:
        return None, _not_compiled(describe(err))
    finally:
        torch.compiler.reset()
    if recompiled:
        return None, _not_compiled("recompiled while timed, so the time would include compilation")
    return timing, {"compiled": True, "compiled_graphs": graphs}


def describe(err: BaseException) -> str:
    """The error's type and first line, and its cause's (a backend's own error, which dynamo wraps)."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    cause = getattr(err, "inner_exception", None) or err.__cause__  # BackendCompilerFailed keeps it apart
    return f"{text} {describe(cause)}" if cause is not None else text


def _not_compiled(reason: str) -> dict[str, Any]:
    return {"compiled": False, "note": f"torch.compile asked for, not measured: {reason}"}
