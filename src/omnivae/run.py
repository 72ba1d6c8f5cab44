"""A training run: data + model + training options -> a run folder.

run_dir/run.yaml (the resolved config), model/ (the saved model), checkpoints/,
logs/ (CSV and TensorBoard), and whatever evaluation writes (metrics.json, figures/).
"""
from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from omnivae.config import StrictModel, read_config_file
from omnivae.data.raw import RawData
from omnivae.data.sources import DataConfig, load_source
from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError, ModelFileError
from omnivae.io import load_model, recover_model_folder, save_model
from omnivae.modalities import infer_spec
from omnivae.models import MODELS, build_model, model_config_from_dict
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.train.checkpoint import atomic_write_bytes, read_checkpoint
from omnivae.train.config import TrainConfig
from omnivae.train.trainer import fit, launched_as_worker


class RunConfig(StrictModel):
    data: DataConfig = DataConfig()
    model: dict[str, Any] = {"model": "mopoe"}  # modalities: {name: overrides}; kinds and shapes come from the data
    train: TrainConfig = TrainConfig()


@dataclass
class Splits:
    train: RawData
    val: RawData
    test: RawData


@dataclass
class RunResult:
    model: MultimodalModel
    run_dir: Path
    splits: Splits
    config: RunConfig


def split_data(raw: RawData, config: RunConfig) -> Splits:
    test_f, val_f = config.data.test_fraction, config.train.val_fraction
    if not 0 <= test_f < 1 or not 0 <= val_f < 1 or test_f + val_f >= 1:
        raise ConfigError(f"test_fraction {test_f} + val_fraction {val_f} must leave training data")
    train, val, test = raw.split((1 - test_f - val_f, val_f, test_f), seed=config.data.split_seed)
    return Splits(train, val, test)


def resolve_model_config(model: dict[str, Any], raw: RawData) -> ModelConfig:
    """Fill each modality's kind and shape from the data, then apply the user's overrides."""
    model = dict(model)
    wanted = model.pop("modalities", None) or {n: {} for n in raw.names}
    if not isinstance(wanted, dict):
        raise ConfigError(f"model.modalities must map names to options, got {wanted!r}")
    specs = {}
    for name, overrides in wanted.items():
        if name not in raw.modalities:
            raise ConfigError(f"model.modalities names {name!r}, but the data has {raw.names}")
        overrides = dict(overrides or {})
        kind = overrides.pop("kind", raw.kinds[name])
        classes = raw.info.get("classes", {}).get(name)
        specs[name] = infer_spec(name, kind, raw.modalities[name], raw.mask[name], overrides, classes).to_dict()
    if "conditional_prior" not in model and len(specs) > 1 and MODELS.get(model.get("model"), None) is not None \
            and MODELS[model["model"]].supports_conditional_prior:
        model["conditional_prior"] = {}  # runs default to it (the quality benchmark's winner); null turns it off
    return model_config_from_dict({**model, "modalities": specs})


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (run_dir / "run.yaml").is_file():
            raise ConfigError(f"cannot resume: {run_dir} holds no run.yaml (not a run folder, or its run was "
                              "killed while starting: train it again with --overwrite)")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"run folder {run_dir} already exists and is not empty; pass --resume to "
                              "continue it, --overwrite to replace it, or choose another --out")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def seed_everything(seed: int) -> None:
    """The same train.seed gives the same initial weights (and the same model on every rank)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def tidy_run_dir(run_dir: Path) -> None:
    """Before resuming: put back a model folder whose save was killed mid-swap, then drop the
    temporary files and folders that killed writes left."""
    recover_model_folder(run_dir / "model")
    for tmp in run_dir.glob(".model.*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in run_dir.glob(".run.yaml.tmp-*"):
        tmp.unlink(missing_ok=True)


def train_run(config: RunConfig | dict, run_dir: str | Path, resume: bool = False,
              overwrite: bool = False) -> RunResult:
    """Load data, build (or restore) the model, train it, save the best weights to run_dir/model."""
    run_dir = Path(run_dir)
    writer = not launched_as_worker()  # rank zero prepared the folder before the other ranks started
    if resume:
        prepare_run_dir(run_dir, resume, overwrite)
        if writer:
            tidy_run_dir(run_dir)
        config = RunConfig.from_dict(read_config_file(run_dir / "run.yaml"), "run.yaml")
    else:
        if isinstance(config, dict):
            config = RunConfig.from_dict(config, "run config")
        if writer:
            prepare_run_dir(run_dir, resume, overwrite)
    seed_everything(config.train.seed)
    splits = split_data(load_source(config.data), config)
    if resume:
        model = load_model(run_dir / "model")
    else:
        model = build_model(resolve_model_config(config.model, splits.train), splits.train)
        config = config.model_copy(update={"model": model.config.to_dict()})
        if writer:  # run.yaml last: a folder with run.yaml always has its model folder
            save_model(model, run_dir / "model")
            atomic_write_bytes(run_dir / "run.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    train = TensorData.from_raw(model, splits.train)
    val = TensorData.from_raw(model, splits.val) if len(splits.val) else None
    result = fit(model, train, val, config.train, run_dir, resume=resume)
    if writer and result.trainer.global_rank == 0:
        best = result.best_checkpoint or (str(result.last_checkpoint) if result.last_checkpoint.is_file() else None)
        if best:
            load_weights_from_checkpoint(model, best)
        if getattr(model.config, "prior", None) is not None:
            from omnivae.priors import fit_prior

            fit_prior(model, splits.train)
        if getattr(model, "conditional_prior", None) is not None:
            from omnivae.priors.conditional import fit_conditional_prior

            fit_conditional_prior(model, train, seed=config.train.seed)
        save_model(model, run_dir / "model")
    return RunResult(model.eval(), run_dir, splits, config)


def load_weights_from_checkpoint(model: MultimodalModel, path: str | Path) -> None:
    state = read_checkpoint(path)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not fit this model: {exc}") from None
