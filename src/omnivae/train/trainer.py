"""Build a Lightning Trainer for a run folder and fit a model."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from omnivae.data.tensors import TensorData, batch_loader
from omnivae.models.base import MultimodalModel
from omnivae.train.checkpoint import AtomicCheckpointIO
from omnivae.train.config import TrainConfig
from omnivae.train.module import OmniModule


class OmniDataModule(L.LightningDataModule):
    def __init__(self, train: TensorData, val: TensorData | None, config: TrainConfig):
        super().__init__()
        self.train_data, self.val_data, self.cfg = train, val, config

    def train_dataloader(self):
        return batch_loader(self.train_data, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed,
                            num_workers=self.cfg.num_workers)

    def val_dataloader(self):
        if self.val_data is None or len(self.val_data) == 0:
            return []
        return batch_loader(self.val_data, max(self.cfg.batch_size, 512), shuffle=False)


@dataclass
class FitResult:
    module: OmniModule
    trainer: L.Trainer
    best_checkpoint: str | None
    last_checkpoint: Path


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def keep_previous_metrics(run_dir: Path) -> None:
    """Lightning's CSV logger would delete metrics.csv on resume: move it to metrics.part-N.csv."""
    current = run_dir / "logs" / "metrics.csv"
    if current.is_file():
        n = len(list(current.parent.glob("metrics.part-*.csv")))
        current.rename(current.with_name(f"metrics.part-{n:03d}.csv"))


def metrics_files(run_dir: str | Path) -> list[Path]:
    """The run's CSV metrics in order: earlier attempts first, then the current one."""
    logs = Path(run_dir) / "logs"
    parts = sorted(logs.glob("metrics.part-*.csv"))
    return parts + ([logs / "metrics.csv"] if (logs / "metrics.csv").is_file() else [])


def make_trainer(config: TrainConfig, run_dir: Path, has_val: bool) -> L.Trainer:
    run_dir = Path(run_dir)
    monitor = "val/loss" if has_val else "train/loss_epoch"
    callbacks = [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor,
                                 mode="min", save_top_k=1, save_last=True)]
    if config.patience is not None and has_val:
        callbacks.append(EarlyStopping(monitor=monitor, patience=config.patience, mode="min"))
    if config.max_minutes is not None:
        callbacks.append(Timer(duration={"minutes": config.max_minutes}, interval="step"))
    if config.progress:
        callbacks.append(RichProgressBar(leave=True))
    loggers = [CSVLogger(run_dir, name="logs", version="")]
    if config.tensorboard:
        loggers.append(TensorBoardLogger(run_dir, name="logs", version="", default_hp_metric=False))
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=config.max_epochs, max_steps=config.max_steps,
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=config.strategy, precision=config.precision, gradient_clip_val=config.grad_clip,
        callbacks=callbacks, logger=loggers, log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.progress, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()], deterministic=False, num_sanity_val_steps=0,
    )


def set_threads(config: TrainConfig) -> None:
    n = config.num_threads
    if n is None:
        procs = config.devices if isinstance(config.devices, int) and config.accelerator == "cpu" else 1
        n = max(1, (os.cpu_count() or 1) // max(1, procs))
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)  # tiny importance weights must not slow the CPU down


def fit(model: MultimodalModel, train: TensorData, val: TensorData | None, config: TrainConfig,
        run_dir: str | Path, resume: bool = False) -> FitResult:
    """Train `model` in place; with resume, continue from run_dir/checkpoints/last.ckpt."""
    run_dir = Path(run_dir)
    if resume:
        keep_previous_metrics(run_dir)
    set_threads(config)
    model.train()
    L.seed_everything(config.seed, workers=True, verbose=False)
    steps = max(1, -(-len(train) // config.batch_size))
    module = OmniModule(model, config, steps_per_epoch=steps)
    trainer = make_trainer(config, run_dir, has_val=val is not None and len(val) > 0)
    ckpt = last_checkpoint(run_dir)
    trainer.fit(module, datamodule=OmniDataModule(train, val, config),
                ckpt_path=str(ckpt) if resume and ckpt.is_file() else None)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
    return FitResult(module, trainer, best or None, ckpt)
