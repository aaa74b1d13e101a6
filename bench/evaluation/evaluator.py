"""The evaluator protocol and its runner, as detectron2's `DatasetEvaluator` and `inference_on_dataset`.

One prediction pass feeds every evaluator: `reset()` before it, `process(targets, outputs)` per
batch, `evaluate()` after it. `watch(model)` is the one addition: a context around the pass
for an evaluator that observes the model itself (the RPN's proposals) rather than its outputs.
Under torchrun each process predicts its shard of the images, and `evaluate()` gathers the
shards to rank 0 (through `bench.comm`), which computes the numbers once; other ranks get None.
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch

from .. import comm
from ..progress import progress as progress_bar

Item = TypeVar("Item")
Targets = Sequence[Mapping[str, Any]]  # per image, with its "image_id"
Outputs = Sequence[Mapping[str, torch.Tensor]]  # per image, a torchvision detector's boxes, scores, labels
_MISSING = object()


class Evaluator:
    """Reads one prediction pass; `evaluate` returns its numbers by name, or None on ranks other than 0."""

    def watch(self, model: torch.nn.Module) -> AbstractContextManager[Any]:
        """A context the pass runs in; most evaluators read the outputs only."""
        return contextlib.nullcontext()

    def reset(self) -> None:
        """Forget any earlier pass."""

    def process(self, targets: Targets, outputs: Outputs) -> None:
        """Take one batch's outputs."""

    def evaluate(self) -> dict[str, Any] | None:
        raise NotImplementedError


class Evaluators(Evaluator):
    """Several evaluators over the same pass, evaluated in the order given; their results merged."""

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators = list(evaluators)

    @contextlib.contextmanager
    def watch(self, model: torch.nn.Module) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for evaluator in self.evaluators:
                stack.enter_context(evaluator.watch(model))
            yield

    def reset(self) -> None:
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, targets: Targets, outputs: Outputs) -> None:
        for evaluator in self.evaluators:
            evaluator.process(targets, outputs)

    def evaluate(self) -> dict[str, Any] | None:
        results = [evaluator.evaluate() for evaluator in self.evaluators]  # on every rank: each one gathers
        if None in results:
            return None
        merged: dict[str, Any] = {}
        for result in results:
            for name, value in result.items():
                if name in merged:
                    raise ValueError(f"two evaluators report {name!r}")
                merged[name] = value
        return merged


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Iterable[tuple[Sequence[torch.Tensor], Targets]], evaluator: Evaluator,
            device: torch.device | str, progress: bool = True, desc: str = "evaluate") -> None:
    """Run the detector over every (images, targets) batch into `evaluator`; leaves the model in eval mode."""
    evaluator.reset()
    model.eval()
    total = len(loader) if isinstance(loader, Sized) else 0
    with evaluator.watch(model), progress_bar(total, desc, enabled=progress) as bar:
        for images, targets in loader:
            evaluator.process(targets, model([image.to(device) for image in images]))
            bar.update()


def inference_on_dataset(model: torch.nn.Module, loader: Iterable[tuple[Sequence[torch.Tensor], Targets]],
                         evaluator: Evaluator, device: torch.device | str, progress: bool = True,
                         desc: str = "evaluate") -> dict[str, Any] | None:
    """One prediction pass into `evaluator`, then its numbers (None on ranks other than 0)."""
    predict(model, loader, evaluator, device, progress, desc)
    return evaluator.evaluate()


def gather(item: Item, sharded: bool) -> list[Item] | None:
    """Every process's `item` on rank 0 in rank order, None on the others; `[item]` for a pass that is not sharded."""
    return comm.gather_object(item) if sharded else [item]


def in_image_order(shards: Sequence[Sequence[Item]]) -> list[Item]:
    """The ranks' per-image items in a single process's image order.

    `bench.data.build_eval_loader` gives rank r of a sharded pass the images r, r + world, ...,
    so taking one item from each rank in turn puts them back in order.
    """
    return [item for turn in itertools.zip_longest(*shards, fillvalue=_MISSING) for item in turn if item is not _MISSING]
