"""Where a run's time goes: host-clock laps between the phases of `train_run` (`Laps`) and,
inside `fit`, a callback (`PhaseClock`) that splits training into steps, validation and
checkpoint writes at Lightning's hook boundaries.

A step's time runs from the end of the previous step (or the start of its epoch) to its own
end: fetching the batch, forward, backward, the optimiser and every hook. Nothing is
synchronised with a device, so on a GPU the times say when the host queued the work.
The run records the result in its training record (`omnivae-run.json`, "phases").
"""
from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback

from omnivae.threads import process_age  # noqa: F401 (kept importable from here: one implementation, in threads)


class Laps:
    """Named wall-clock laps: `lap(name)` charges the time since the previous lap to `name`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        spent, self._last = now - self._last, now
        self.seconds[name] = self.seconds.get(name, 0.0) + spent
        return spent


class PhaseClock(Callback):
    """Seconds spent in training steps, validation and checkpoint writes, and the step count.

    Checkpoint writes are timed around `trainer.save_checkpoint` (every checkpoint callback
    writes through it), so validation's time excludes the best checkpoint saved at its end.
    `setup_s` is from `fit`'s call to the first step's epoch, `teardown_s` from the end of
    training to `fit`'s return (both need `begin`/`end` called around `trainer.fit`)."""

    def __init__(self) -> None:
        self.seconds = {"setup": 0.0, "steps": 0.0, "validation": 0.0, "checkpoints": 0.0, "teardown": 0.0}
        self.steps = 0
        self._mark: float | None = None  # the last step boundary
        self._begun = self._val_start = self._val_ckpt = self._ended = None
        self._saver = None

    def begin(self) -> None:
        self._begun = time.perf_counter()

    def end(self) -> None:
        if self._ended is not None:
            self.seconds["teardown"] += time.perf_counter() - self._ended

    def setup(self, trainer, pl_module, stage: str) -> None:
        original = trainer.save_checkpoint

        def timed_save(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds["checkpoints"] += time.perf_counter() - start

        trainer.save_checkpoint, self._saver = timed_save, timed_save

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if trainer.__dict__.get("save_checkpoint") is self._saver:
            del trainer.save_checkpoint  # back to the Trainer's own method

    def on_train_start(self, trainer, pl_module) -> None:
        if self._begun is not None:
            self.seconds["setup"] += time.perf_counter() - self._begun

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds["steps"] += now - self._mark
            self.steps += 1
        self._mark = now

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start, self._val_ckpt = time.perf_counter(), self.seconds["checkpoints"]

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            elapsed = time.perf_counter() - self._val_start
            self.seconds["validation"] += elapsed - (self.seconds["checkpoints"] - self._val_ckpt)
            self._val_start = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._ended = time.perf_counter()

    def record(self, fit_seconds: float) -> dict[str, float]:
        """{phase}_s rounded to ms; `other_s` is the rest of `fit_seconds` (epoch ends, logging, hooks)."""
        other = fit_seconds - sum(self.seconds.values())
        return {f"{k}_s": round(v, 3) for k, v in {**self.seconds, "other": other}.items()}
