"""Shared pieces of the training tests: a callback that crashes mid-epoch, and fit() with
extra callbacks on the Trainer it builds."""
from __future__ import annotations

import lightning as L

from omnivae.train.config import TrainConfig
from omnivae.train.trainer import fit


class Crash(L.Callback):
    """Raises before batch `at` of the first epoch, after the step checkpoint of batch at - 1."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == self.at:
            raise RuntimeError("simulated crash")


def fit_with(monkeypatch, model, data, run_dir, train: dict, callbacks=(), resume: bool = False):
    """omnivae.train.trainer.fit with `callbacks` added to its Trainer (no validation split)."""
    from omnivae.train import trainer as trainer_file

    real = trainer_file.make_trainer

    def with_callbacks(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.callbacks.extend(callbacks)
        return trainer

    monkeypatch.setattr(trainer_file, "make_trainer", with_callbacks)
    try:
        return fit(model, data, None, TrainConfig.from_dict(train), run_dir, resume=resume)
    finally:
        monkeypatch.setattr(trainer_file, "make_trainer", real)
