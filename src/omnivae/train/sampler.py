"""Training data order as a pure function of (seed, epoch), resumable mid-epoch.

`EpochSampler` draws epoch e's permutation from numpy's SeedSequence([seed, e]) (no global
RNG is touched) and, under torch.distributed, gives each process an equal share (padded like
DistributedSampler, so every process runs the same number of steps). `ResumableLoader` is a
DataLoader that Lightning recognises as stateful: it saves how far into the epoch training
got, and a resumed run skips exactly those examples, so it sees the batches the
uninterrupted run would have seen. Examples with several values (all captions of an image)
use the one TensorData.choose draws for (seed, epoch), so a resumed epoch sees the same ones.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from omnivae.data.tensors import TensorData, pass_batch


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation fixed by (seed, epoch), this process's share of it."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle = int(n), int(seed), shuffle
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, indices to skip) after a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_next(self, epoch: int, count: int) -> None:
        """The next pass over `epoch` starts after its first `count` indices."""
        self._skip = (int(epoch), int(count))

    def order(self, epoch: int) -> list[int]:
        """This process's indices for `epoch`, in order."""
        if self.shuffle:
            # SeedSequence mixes (seed, epoch) into a well-spread state; negative seeds are fine
            entropy = [self.seed & 0xFFFFFFFF, (self.seed >> 32) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]
            idx = np.random.default_rng(np.random.SeedSequence(entropy)).permutation(self.n)
        else:
            idx = np.arange(self.n)
        rank, world = process_group()
        if world > 1:
            total = -(-self.n // world) * world
            idx = np.concatenate([idx, idx[: total - self.n]]) if total > self.n else idx
            idx = idx[rank:total:world]
        return idx.tolist()

    def __len__(self) -> int:
        _, world = process_group()
        return -(-self.n // world)

    def __iter__(self) -> Iterator[int]:
        idx = self.order(self.epoch)
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = min(self._skip[1], len(idx))
        self._skip = None
        return iter(idx[start:])


class ResumableLoader(DataLoader):
    """DataLoader over an EpochSampler; `state_dict`/`load_state_dict` make Lightning save
    the position within the epoch in every checkpoint and restore it on resume. The position
    counts batches handed to training (not indices prefetched by workers)."""

    def __init__(self, data: TensorData | Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_workers: int = 0):
        sampler = EpochSampler(len(data), seed, shuffle)
        super().__init__(data, batch_size=batch_size, sampler=sampler, collate_fn=pass_batch,
                         num_workers=num_workers, generator=torch.Generator().manual_seed(int(seed) % 2**63))
        self.epoch_batches = 0  # batches of the current epoch handed out so far

    def __iter__(self):
        epoch = self.sampler.epoch
        skip = self.sampler._skip
        self.epoch_batches = skip[1] // self.batch_size if skip is not None and skip[0] == epoch else 0
        if isinstance(self.dataset, TensorData):  # a streamed folder (LazyRows) has one value per example
            self.dataset.choose(self.sampler.seed, epoch)  # before any worker starts: they copy the choice
        for batch in super().__iter__():
            self.epoch_batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.epoch_batches, "batch_size": self.batch_size,
                "seed": self.sampler.seed, "n": self.sampler.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        same = all(int(state.get(k, v)) == v for k, v in
                   (("n", self.sampler.n), ("seed", self.sampler.seed), ("batch_size", self.batch_size)))
        if not same:  # other data, seed or batch size: the saved position means nothing here
            return
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip_next(int(state["epoch"]), int(state["batches"]) * self.batch_size)
