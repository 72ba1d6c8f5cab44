"""Callbacks that make a resumed run continue exactly where the saved one stopped.

RandomState puts the torch, numpy and Python RNG states in every checkpoint (as tensors and
plain numbers: checkpoints are read with torch's weights-only loader) and restores them when
training restarts. LastCheckpoint writes last.ckpt at every epoch end and, optionally, every
n optimiser steps, so a crash loses at most an epoch (or n steps). It also turns SIGTERM and
SIGINT into a clean stop: last.ckpt is written at the next point where a step or epoch-end
checkpoint could be taken, then TrainingInterrupted is raised (nothing else is written).
"""
from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

from omnivae.errors import TrainingError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(TrainingError):
    """Training was stopped by SIGTERM or SIGINT. `checkpoint` is the last.ckpt written on the
    way out (None if none was: resuming then starts from the newest earlier checkpoint);
    `exit_code` is the shell's convention, 128 + the signal number (143, 130)."""

    def __init__(self, signum: int, step: int, checkpoint: str | Path | None):
        self.signum, self.step = int(signum), int(step)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        where = (f"checkpoint written to {self.checkpoint}" if self.checkpoint is not None
                 else "no new checkpoint: resuming starts from the last one written")
        super().__init__(f"training interrupted by {signal.Signals(self.signum).name} at step {self.step}; {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


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

    def __init__(self, path: str | Path, every_n_steps: int | None = None, stop_on_signals: bool = True):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.path, self.every = str(path), every_n_steps
        self._saved_step = -1
        self.start_step: int | None = None  # global step when training started (None: it did not, e.g. a
        # resumed run that had already finished)
        self.stop_on_signals = stop_on_signals
        self._signal: int | None = None  # SIGTERM / SIGINT received, acted on at the next checkpoint point
        self._previous: dict[int, Any] = {}  # handlers replaced while training
        self._trainer: L.Trainer | None = None
        self._copy_to: str | None = None  # a best checkpoint to copy from the next last.ckpt of this step

    @property
    def state_key(self) -> str:
        return "omnivae.LastCheckpoint"

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._saved_step = trainer.global_step
        copy, self._copy_to = self._copy_to, None  # AtomicCheckpointIO copies the file there once written
        trainer.save_checkpoint(self.path, weights_only=False,  # full state, for resuming (and no "not set" notice)
                                storage_options=None if copy is None else {"copy_to": copy})

    def saves_at_epoch_end(self, trainer: L.Trainer) -> bool:
        """Whether this epoch's end (validation included) is still to come with a save: a checkpoint
        asked for now can be a copy of that last.ckpt."""
        return (trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and not trainer.sanity_checking
                and trainer.state.fn == TrainerFn.FITTING and self._saved_step != trainer.global_step)

    def copy_next(self, path: str | Path) -> None:
        """Make `path` a copy of the last.ckpt written next (at this epoch's end)."""
        self._copy_to = str(path)

    # -- stopping on SIGTERM / SIGINT ------------------------------------------------------
    def _install(self, trainer: L.Trainer) -> None:
        """Our handler for SIGTERM and SIGINT (one process, main thread only: with several
        processes Lightning's own SIGTERM handling stays, and fit() reports it)."""
        if not self.stop_on_signals or trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current != self._on_signal:
                self._previous.setdefault(signum, current)
                signal.signal(signum, self._on_signal)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._on_signal and handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum: int, frame) -> None:
        if self._signal is not None:  # asked twice: stop at once (the checkpoints on disk are whole)
            self._restore()
            raise TrainingInterrupted(signum, -1 if self._trainer is None else self._trainer.global_step, None)
        self._signal = signum

    def _stop(self, trainer: L.Trainer) -> None:
        signum, self._signal = self._signal, None
        self._restore()
        raise TrainingInterrupted(signum, trainer.global_step, self.path)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._trainer, self._signal = trainer, None

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._restore()

    # -- checkpoints ------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._saved_step = trainer.global_step  # a resumed run starts from a saved state
        self.start_step = trainer.global_step
        if trainer.received_sigterm and self._signal is None:  # Lightning's handler saw it first
            self._signal = signal.SIGTERM
        # installed here, after Lightning's own SIGTERM handler (which it removes again at
        # teardown, putting back the handlers from before fit, whichever teardown runs first)
        self._install(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch-end save follows after validation (and a stop asked for now waits for
            # it). A checkpoint taken after the last batch would resume through Lightning's
            # (2.6) restart-on-last-batch path, which leaves the next epoch's progress counters
            # behind, so a later mid-epoch resume restarts that epoch from its first batch
            # (found by tests/test_reliability_kill.py)
            return
        if self._signal is not None:
            if step != self._saved_step:
                self._save(trainer)
            self._stop(trainer)
        if not self.every or step <= 0 or step % self.every or step == self._saved_step:
            return
        self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._save(trainer)  # validation of this epoch has run by now
        if self._signal is not None:
            self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step != self._saved_step:  # stopped mid-epoch (max_steps, time budget)
            self._save(trainer)
        if self._signal is not None:
            self._stop(trainer)
