"""The run's Lightning loggers, chosen by `train.loggers` (docs/tracking.md).

csv and tensorboard write to RUN/logs; mlflow to an MLflow tracking store (by default a file:
store in RUN/mlruns); wandb to RUN/wandb, offline unless WANDB_MODE says otherwise. All of them
are Lightning's own loggers; mlflow and wandb are imported only when asked for. The run config
(RUN/run.yaml, else the training options) is logged to each as hyperparameters when fitting starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from omnivae.errors import ConfigError
from omnivae.run_folder import RunFolder
from omnivae.train.config import LOGGERS, TrainConfig

DEFAULT_LOGGERS = ("csv", "tensorboard")
INSTALL_HINT = "pip install 'omnivae[tracking]'"


def logger_names(config: TrainConfig) -> list[str]:
    """train.loggers (default csv + tensorboard), without tensorboard when train.tensorboard is false."""
    names = list(DEFAULT_LOGGERS if config.loggers is None else config.loggers)
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:  # TrainConfig validates this; a config built some other way is checked here too
        raise ConfigError(f"train.loggers: unknown logger {unknown[0]!r}; allowed: {', '.join(LOGGERS)}")
    return [n for n in names if n != "tensorboard" or config.tensorboard]


def require(module: str, logger: str):
    """Import an optional tracking package, or say how to install it."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise ConfigError(f"train.loggers lists {logger!r}, which needs the {module} package ({exc}); "
                          f"install it with: {INSTALL_HINT}") from None


def mlflow_tracking_uri(config: TrainConfig, run_dir: Path) -> str:
    return config.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()


def mlflow_logger(config: TrainConfig, run_dir: Path) -> Logger:
    require("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException

    uri = mlflow_tracking_uri(config, run_dir)
    if uri.startswith("file:") or len(urlparse(uri).scheme) <= 1:  # a file: URI or a path (C: is a drive)
        # MLflow 3 refuses its file store unless this is set; a file store is what a run folder holds
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return MLFlowLogger(experiment_name=config.experiment, run_name=run_dir.name, tracking_uri=uri,
                            tags={"omnivae.run_dir": str(run_dir.resolve())})
    except (MlflowException, ImportError) as exc:
        raise ConfigError(f"train.mlflow_uri {uri!r} cannot be used: {exc}") from None


class FinishingWandbLogger(WandbLogger):
    """Lightning's WandbLogger leaves the W&B run open after fit: finish it, so its files are
    complete (offline: ready for `wandb sync`) and a later run in this process starts its own."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:
            self._experiment.finish(exit_code=0 if status == "success" else 1)


def wandb_logger(config: TrainConfig, run_dir: Path) -> Logger:
    require("wandb", "wandb")
    mode = os.environ.get("WANDB_MODE") or "offline"  # WANDB_MODE=online uploads while training
    return FinishingWandbLogger(project=config.experiment, name=run_dir.name, save_dir=str(run_dir), mode=mode)


def build_loggers(config: TrainConfig, run_dir: Path) -> list[Logger]:
    run_dir = Path(run_dir)
    logs = RunFolder(run_dir).logs.name  # RUN/logs: the loggers add no version subfolder
    loggers: list[Logger] = []
    for name in logger_names(config):
        if name == "csv":
            loggers.append(CSVLogger(run_dir, name=logs, version=""))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, name=logs, version="", default_hp_metric=False))
        elif name == "mlflow":
            loggers.append(mlflow_logger(config, run_dir))
        elif name == "wandb":
            loggers.append(wandb_logger(config, run_dir))
    return loggers


def run_params(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The run config as written to RUN/run.yaml; without one (fit called directly), the training options."""
    saved = RunFolder(run_dir).saved_config()
    return saved if saved is not None else {"train": config.to_dict()}


class LogRunConfig(L.Callback):
    """Logs the run config to every logger as hyperparameters when fitting starts (in the process
    that trains, after any launcher has started it; loggers write on rank zero only)."""

    def __init__(self, config: TrainConfig, run_dir: Path):
        self.config, self.run_dir = config, Path(run_dir)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or not trainer.loggers:
            return
        params = run_params(self.config, self.run_dir)
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
