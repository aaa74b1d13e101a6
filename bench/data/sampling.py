"""Which images go into which batch: a function of (seed, epoch) alone, so runs can be paired and resumed.

Epoch e's order is a permutation drawn from a generator seeded with (seed, e), never from the
global RNG that model code also draws from: every backbone trained with a seed sees the same
batches in the same order. Batching groups images by orientation (padding a mix of wide and
tall images wastes compute). Training batches never end: the schedule is counted in
iterations, and iteration i's batch is the same whether the run got there in one go or was
resumed at i, which only needs to skip i batches of plain index arithmetic.
Under torchrun every process computes the same global batch and takes its share of it, so
the global batch equals the single-process one.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..checks import check_batch_split
from ..errors import DataError
from .dataset import CocoDetection, SampleKey


def collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Lists of images and targets: the detector takes images of different sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def epoch_batches(group_ids: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Epoch `epoch`'s batches: a (seed, epoch) permutation, filled group by group; leftovers dropped."""
    order = np.random.default_rng([seed, epoch]).permutation(len(group_ids))
    buffers: dict[int, list[int]] = defaultdict(list)
    batches = []
    for index in order.tolist():
        buffer = buffers[group_ids[index]]
        buffer.append(index)
        if len(buffer) == batch_size:
            batches.append(buffer[:])
            buffer.clear()
    return batches


class PairedBatchSampler(Sampler[list[SampleKey]]):
    """Endless training batches of `SampleKey`s; process `rank` of `world` takes batch[rank::world]."""

    def __init__(self, group_ids: Sequence[int], batch_size: int, seed: int, start: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        check_batch_split(batch_size, world)
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.seed = seed
        self.start = start  # batches already trained on: a resumed run starts after them
        self.rank, self.world = rank, world
        self.per_epoch = len(epoch_batches(self.group_ids, batch_size, seed, 0))
        if self.per_epoch == 0:
            raise DataError(f"{len(self.group_ids)} training images make no full batch of {batch_size}")

    def __iter__(self) -> Iterator[list[SampleKey]]:
        first_epoch, skip = divmod(self.start, self.per_epoch)
        for epoch in itertools.count(first_epoch):
            batches = epoch_batches(self.group_ids, self.batch_size, self.seed, epoch)
            for batch in batches[skip if epoch == first_epoch else 0:]:
                yield [SampleKey(epoch, index) for index in batch[self.rank::self.world]]


def build_train_loader(
    dataset: CocoDetection, batch_size: int, seed: int, workers: int = 0, start: int = 0,
    rank: int = 0, world: int = 1, pin_memory: bool = False,
) -> DataLoader:
    """Endless, paired training batches (`batch_size` is the global batch) from iteration `start` on."""
    wide = [int(ratio >= 1.0) for ratio in dataset.aspect_ratios()]
    sampler = PairedBatchSampler(wide, batch_size, seed, start=start, rank=rank, world=world)
    # Its own generator: a loader drawing its worker seeds from the global RNG would shift the model's
    # random draws by one at every (re)start, and a resumed run would no longer match.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=workers > 0, generator=generator)


def build_eval_loader(dataset: CocoDetection, batch_size: int, workers: int = 0, rank: int = 0,
                      world: int = 1) -> DataLoader:
    """Every image once, in index order; process `rank` of `world` takes images rank, rank + world, ..."""
    shard = list(range(rank, len(dataset), world))
    return DataLoader(torch.utils.data.Subset(dataset, shard), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=collate, generator=torch.Generator().manual_seed(0))
