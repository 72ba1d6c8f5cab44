"""Callbacks that make a resumed run continue exactly where the saved one stopped.

RandomState puts the torch, numpy and Python RNG states in every checkpoint (as tensors and
plain numbers: checkpoints are read with torch's weights-only loader) and restores them when
training restarts. LastCheckpoint writes last.ckpt at every epoch end and, optionally, every
n optimiser steps, so a crash loses at most an epoch (or n steps).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn


def capture_rng() -> dict[str, Any]:
    """The global RNG states as tensors and plain Python values."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": (int(version), torch.tensor(words, dtype=torch.int64), gauss),
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, words, gauss = state["python"]
    random.setstate((int(version), tuple(int(w) for w in words.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def rank_seed(seed: int, rank: int) -> int:
    """A seed for process `rank` of a run seeded with `seed` (independent streams per process)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, rank]).generate_state(1)[0])


class RandomState(Callback):
    """Saves the RNG states with each checkpoint; restores them when training (re)starts.

    With several processes, each process draws its own noise (a fresh run reseeds process r
    from (seed, r)), every checkpoint holds the states of all processes, and each process
    gets its own back on resume. Restoring at on_train_start (not at load time) keeps
    whatever Lightning does while it sets up from drawing on the restored streams.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._pending: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None

    @property
    def state_key(self) -> str:
        return "omnivae.RandomState"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = capture_rng()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            # called on every process (Lightning builds checkpoints everywhere, writes on rank 0)
            everyone: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(everyone, state)
            return {**state, "ranks": everyone}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            if trainer.world_size > 1:  # fresh run: one independent stream per process
                seed = rank_seed(self.seed, trainer.global_rank)
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
            return
        ranks = state.get("ranks")
        if ranks is not None and len(ranks) == trainer.world_size:
            state = ranks[trainer.global_rank]
        elif trainer.world_size > 1:  # saved with another number of processes: reseed instead
            seed = rank_seed(self.seed + int(trainer.global_step), trainer.global_rank)
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            return
        restore_rng(state)


class LastCheckpoint(Checkpoint):
    """Write last.ckpt at every epoch end (after validation, whether or not it improved),
    every `every_n_steps` optimiser steps if given, and when training stops early.

    (Lightning's ModelCheckpoint(save_last=True) only refreshes last.ckpt when a new best
    is saved, so a crash could lose every epoch since the last improvement.) Being a
    Checkpoint, Lightning runs it after the other callbacks, so their state is included.
    """

    def __init__(self, path: str | Path, every_n_steps: int | None = None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.path, self.every = str(path), every_n_steps
        self._saved_step = -1

    @property
    def state_key(self) -> str:
        return "omnivae.LastCheckpoint"

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._saved_step = trainer.global_step
        trainer.save_checkpoint(self.path, weights_only=False)  # full state, for resuming (and no "not set" notice)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._saved_step = trainer.global_step  # a resumed run starts from a saved state

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every or step <= 0 or step % self.every or step == self._saved_step:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch-end save follows after validation. A checkpoint taken after the last
            # batch would resume through Lightning's (2.6) restart-on-last-batch path, which
            # leaves the next epoch's progress counters behind, so a later mid-epoch resume
            # restarts that epoch from its first batch (found by tests/test_reliability_kill.py)
            return
        self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._save(trainer)  # validation of this epoch has run by now

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step != self._saved_step:  # stopped mid-epoch (max_steps, time budget)
            self._save(trainer)
