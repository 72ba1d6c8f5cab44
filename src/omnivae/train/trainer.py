"""Build a Lightning Trainer for a run folder and fit a model."""
from __future__ import annotations

import logging
import os
import signal
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, Timer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from omnivae.data.tensors import TensorData, batch_loader
from omnivae.models.base import MultimodalModel
from omnivae.run_folder import RunFolder
from omnivae.threads import default_threads
from omnivae.train.adversarial import select_module
from omnivae.train.callbacks import LastCheckpoint, RandomState, TrainingInterrupted
from omnivae.train.checkpoint import AtomicCheckpointIO, CheckpointWarning, resume_checkpoint
from omnivae.train.config import TrainConfig
from omnivae.train.loggers import LogRunConfig, build_loggers
from omnivae.train.module import OmniModule
from omnivae.train.sampler import ResumableLoader
from omnivae.train.timing import PhaseClock

class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose state_key (Lightning formats it for every hook call of every step)
    is built once: it depends only on the constructor's arguments.

    A new best found at an epoch's end is not serialised on its own: `last` writes last.ckpt at
    the same step moments later and copies that file to best.ckpt (one torch.save and hash
    instead of two; the same weights, and the epoch-end state a resume needs)."""

    def __init__(self, *args, last: LastCheckpoint | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.last = last

    @property
    def state_key(self) -> str:
        if "_state_key" not in self.__dict__:
            self.__dict__["_state_key"] = super().state_key
        return self.__dict__["_state_key"]

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self.last is None or not self.last.saves_at_epoch_end(trainer):
            return super()._save_checkpoint(trainer, filepath)
        self.last.copy_next(filepath)
        self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class ConfiguredEarlyStopping(EarlyStopping):
    """EarlyStopping whose patience is the configured one, also after a resume (Lightning's own
    restores the patience saved in the checkpoint, so `--set train.patience=...` on resume
    would be ignored). Same state_key as EarlyStopping: older checkpoints still restore it."""

    @property
    def state_key(self) -> str:
        return "EarlyStopping" + repr({"monitor": self.monitor, "mode": self.mode})

    def load_state_dict(self, state_dict: dict) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience


class OmniDataModule(L.LightningDataModule):
    def __init__(self, train: TensorData, val: TensorData | None, config: TrainConfig):
        super().__init__()
        self.train_data, self.val_data, self.cfg = train, val, config

    def train_dataloader(self):
        # order fixed by (seed, epoch), split across processes, position saved in checkpoints
        return ResumableLoader(self.train_data, self.cfg.batch_size, seed=self.cfg.seed, shuffle=True,
                               num_workers=self.workers(self.train_data))

    def val_dataloader(self):
        # every process validates the whole (small) validation set: identical val/loss everywhere
        if self.val_data is None or len(self.val_data) == 0:
            return []
        # in-memory data is sliced in this process; a streamed folder (LazyRows) is read by the workers
        workers = 0 if isinstance(self.val_data, TensorData) else self.workers(self.val_data)
        return batch_loader(self.val_data, max(self.cfg.batch_size, 512), shuffle=False, num_workers=workers)

    def workers(self, data) -> int:
        """train.num_workers; unset: none for in-memory data, and for a streamed folder one per core
        that this process's torch threads leave free (at most 4): a worker that shares a core with
        the training threads slows every step (2 cores, 2 threads, benchmarks/bench_streaming.py:
        one worker 0.79 and 0.99 of the in-memory rate in two runs, decoding in this process 1.05)."""
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        if isinstance(data, TensorData):
            return 0
        return max(0, min(4, (os.cpu_count() or 1) - torch.get_num_threads() * cpu_processes(self.cfg)))


@dataclass
class FitResult:
    module: OmniModule
    trainer: L.Trainer
    best_checkpoint: str | None
    last_checkpoint: Path
    clock: PhaseClock  # seconds in steps, validation and checkpoint writes


def last_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint written at every epoch end, for resuming (RunFolder.last_checkpoint)."""
    return RunFolder(run_dir).last_checkpoint


def make_trainer(config: TrainConfig, run_dir: Path, has_val: bool) -> L.Trainer:
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    monitor = "val/loss" if has_val else "train/loss_epoch"
    # best.ckpt: the best epoch so far; last.ckpt (LastCheckpoint, after it in order): every
    # epoch end and every checkpoint_every_n_steps steps, for resuming
    last = LastCheckpoint(folder.last_checkpoint, config.checkpoint_every_n_steps)
    callbacks = [BestCheckpoint(dirpath=folder.checkpoints, filename=folder.best_checkpoint.stem, monitor=monitor,
                                 mode="min", save_top_k=1, save_last=False, enable_version_counter=False,
                                 save_on_train_epoch_end=not has_val,  # with validation: after it, only
                                 last=last),
                 last,
                 RandomState(config.seed), PhaseClock()]
    if config.patience is not None and has_val:
        # checked after validation only: a run stopped by max_steps mid-epoch has no val/loss to read
        callbacks.append(ConfiguredEarlyStopping(monitor=monitor, patience=config.patience, mode="min",
                                                 check_on_train_epoch_end=False))
    if config.max_minutes is not None:
        callbacks.append(Timer(duration={"minutes": config.max_minutes}, interval="step"))
    if config.progress:
        callbacks.append(RichProgressBar(leave=True))
    loggers = build_loggers(config, run_dir)  # train.loggers: csv, tensorboard, mlflow, wandb
    callbacks.append(LogRunConfig(config, run_dir))
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=config.max_epochs, max_steps=config.max_steps,
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=config.strategy, precision=config.precision, gradient_clip_val=config.grad_clip,
        callbacks=callbacks, logger=loggers, log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.progress, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()], deterministic=False, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # ResumableLoader shards the data itself
    )


def cpu_processes(config: TrainConfig) -> int:
    """Training processes sharing this machine's cores: the devices of a CPU run (one per device
    on this node), else 1."""
    return config.devices if isinstance(config.devices, int) and config.accelerator == "cpu" else 1


def set_threads(config: TrainConfig) -> None:
    n = config.num_threads
    if n is None:
        n = default_threads(os.cpu_count() or 1, cpu_processes(config))
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)  # tiny importance weights must not slow the CPU down


def launched_as_worker() -> bool:
    """True in a process a launcher started as a non-zero rank (Lightning's ddp launcher re-runs
    the command with LOCAL_RANK=1..; other nodes have NODE_RANK > 0; torchrun sets RANK): such a
    process must not prepare or write the run folder, which rank zero owns."""
    return any(os.environ.get(k, "0").strip() not in ("", "0")
               for k in ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "RANK"))


# Lightning's start-up chatter that says nothing about this run (hardware lines, a product tip)
# and warnings about choices made on purpose here; real warnings still show
LIGHTNING_NOISE = (r".*isinstance\(treespec, LeafSpec\).*", r".*overridden `transfer_batch_to_device`.*",
                   r".*does not have many workers.*", r".*smaller than the logging interval.*")


@contextmanager
def quiet_lightning():
    info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = info.level
    info.setLevel(logging.WARNING)  # "GPU available: False ...", "Tip: ... litlogger"
    try:
        with warnings.catch_warnings():
            for message in LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        info.setLevel(level)


def fit(model: MultimodalModel, train: TensorData, val: TensorData | None, config: TrainConfig,
        run_dir: str | Path, resume: bool = False) -> FitResult:
    """Train `model` in place; with resume, continue from the newest intact checkpoint in
    run_dir/checkpoints (last.ckpt, else previous.ckpt, else best.ckpt, with a warning)."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    # train.adversarial_weight > 0: AdversarialModule (train/adversarial.py), checked against the model
    # here (ConfigError) before anything is touched; it clips gradients itself (manual optimisation),
    # so its Trainer gets no gradient_clip_val
    module_class = select_module(model, config) or OmniModule
    trainer_config = config if module_class is OmniModule else config.model_copy(update={"grad_clip": None})
    ckpt_path = None
    if resume:
        ckpt_path = resume_checkpoint(run_dir)  # raises ModelFileError if none is intact
        if ckpt_path is None:
            warnings.warn(f"{run_dir} has no checkpoint yet: training starts from the beginning",
                          CheckpointWarning, stacklevel=2)
        if not launched_as_worker():  # the run folder is rank zero's
            folder.remove_temporary_checkpoints()
            folder.keep_previous_metrics()
    set_threads(config)
    model.train()
    L.seed_everything(config.seed, workers=True, verbose=False)
    with quiet_lightning():
        trainer = make_trainer(trainer_config, run_dir, has_val=val is not None and len(val) > 0)
    steps = max(1, -(-len(train) // (config.batch_size * trainer.world_size)))  # per process
    module = module_class(model, config, steps_per_epoch=steps)
    clock = next(c for c in trainer.callbacks if isinstance(c, PhaseClock))
    clock.begin()
    try:
        with quiet_lightning():
            trainer.fit(module, datamodule=OmniDataModule(train, val, config),
                        ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    except SIGTERMException:  # Lightning's own SIGTERM stop (LastCheckpoint handles it first on one process)
        raise TrainingInterrupted(signal.SIGTERM, trainer.global_step, None) from None
    clock.end()
    ckpt = folder.last_checkpoint
    best = next((c.best_model_path for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    return FitResult(module, trainer, best or None, ckpt, clock)
