"""A training run: data + model + training options -> a run folder.

run_dir/omnivae-run.json (marks the folder as a run: only such folders are ever replaced),
run.yaml (the resolved config), model/ (the saved model), checkpoints/, logs/ (CSV and
TensorBoard), and whatever evaluation writes (metrics.json, figures/).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from omnivae.atomic import write_bytes as atomic_write_bytes
from omnivae.config import StrictModel, read_config_file
from omnivae.data.raw import RawData
from omnivae.data.sources import DataConfig, load_source
from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError, ModelFileError
from omnivae.io import CONFIG_FILE, FORMAT, UntrainedModelWarning, load_model, recover_model_folder, save_model
from omnivae.modalities import infer_spec
from omnivae.models import MODELS, build_model, model_config_from_dict
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.train.adversarial import select_module
from omnivae.train.callbacks import LastCheckpoint
from omnivae.train.checkpoint import read_checkpoint
from omnivae.train.config import TrainConfig
from omnivae.train.trainer import fit, launched_as_worker
from omnivae.version import __version__

RUN_MARKER = "omnivae-run.json"
# what `--resume` may change (train_run(config, run_dir, resume=True)): how long training goes on
# and how it is run and logged; anything else (model, data, optimiser, seed) would silently not
# apply to the restored state, or make the checkpoint mean something else, so it is refused
RESUMABLE_KEYS = ("train.max_epochs", "train.max_steps", "train.max_minutes", "train.patience",
                  "train.on_nonfinite", "train.checkpoint_every_n_steps", "train.log_every_n_steps",
                  "train.progress", "train.tensorboard", "train.loggers", "train.num_threads", "train.num_workers",
                  "train.devices", "train.num_nodes", "train.strategy")


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
    steps_trained: int | None = None  # optimiser steps this call ran (0: a resumed run that had finished)


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


def is_run_folder(path: Path) -> bool:
    """True for a folder an omnivae run wrote: it holds omnivae-run.json (written first by every
    run since the marker exists) or, for older runs, an omnivae model folder model/config.json
    (written before anything else but the marker; also as .model.old-* after a killed save)."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        return True
    for header in [path / "model" / CONFIG_FILE, *path.glob(f".model.old-*/{CONFIG_FILE}")]:
        try:
            if header.is_file() and json.loads(header.read_text(encoding="utf-8")).get("format") == FORMAT:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse, before anything is touched, a --out that is a file, a non-empty folder without
    --overwrite, or (with --overwrite) a non-empty folder that is not an omnivae run folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is a file, not a folder; choose another --out")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not is_run_folder(run_dir):
        raise ConfigError(f"folder {run_dir} already exists and is not an omnivae run folder (it has no "
                          f"{RUN_MARKER} and no model/ written by omnivae), so it is left as it is, even with "
                          "--overwrite: choose another --out, or empty the folder yourself")
    if not overwrite:
        raise ConfigError(f"run folder {run_dir} already exists and is not empty; pass --resume to "
                          "continue it, --overwrite to replace it, or choose another --out")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (run_dir / "run.yaml").is_file():
            raise ConfigError(f"cannot resume: {run_dir} holds no run.yaml (not a run folder, or its run was "
                              "killed while starting: train it again with --overwrite)")
        return
    check_run_dir(run_dir, overwrite)
    for leftover in run_dir.parent.glob(f".{run_dir.name}.replaced-*"):  # a replace killed while deleting
        shutil.rmtree(leftover, ignore_errors=True)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        # one rename takes the old run away whole (a kill cannot leave half a run that is no
        # longer recognisable as one), then it is deleted
        trash = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}-{time.time_ns()}")
        os.replace(run_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = {"format": "omnivae-run", "omnivae_version": __version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_bytes(run_dir / RUN_MARKER, (json.dumps(marker, indent=2) + "\n").encode())


def config_leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.max_epochs": 3, ...}: the leaves of nested dicts (lists and scalars are leaves)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(config_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree} if prefix else {}


_UNSET = object()  # a key run.yaml does not have


def resume_config(saved: dict[str, Any], changes: dict[str, Any] | RunConfig, where: str) -> dict[str, Any]:
    """run.yaml's config with `changes` (a partial or whole run config) applied, if every key
    they change is in RESUMABLE_KEYS; otherwise a ConfigError naming each refused key."""
    if isinstance(changes, RunConfig):
        changes = changes.to_dict()
    if not isinstance(changes, dict):
        raise ConfigError(f"{where} must be a mapping of config sections, got {type(changes).__name__}")
    old = config_leaves(saved)
    changed = {}
    for key, value in config_leaves(changes).items():
        before = old.get(key, _UNSET)
        if before is _UNSET or before != value:
            if before is _UNSET and any(k.startswith(key + ".") for k in old) and value in ({}, None):
                continue  # an empty section or modality entry changes nothing
            changed[key] = (before, value)
    refused = [k for k in changed if k not in RESUMABLE_KEYS]
    if refused:
        shown = "; ".join(f"{k}: {'(not set)' if changed[k][0] is _UNSET else repr(changed[k][0])} -> "
                          f"{changed[k][1]!r}" for k in refused)
        raise ConfigError(f"cannot change {', '.join(refused)} when resuming ({shown}): the checkpoint was "
                          "trained with the values in run.yaml. On resume only these may change: "
                          + ", ".join(RESUMABLE_KEYS) + ". Start a new run (another --out) for anything else.")
    merged = json.loads(json.dumps(saved))
    for key, (_, value) in changed.items():
        node = merged
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return merged


def seed_everything(seed: int) -> None:
    """The same train.seed gives the same initial weights (and the same model on every rank)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def check_model_name(section: dict) -> None:
    """An unknown model name fails at once, with the nearest known one."""
    from omnivae.errors import did_you_mean
    from omnivae.models import MODELS

    if not isinstance(section, dict) or "model" not in section:
        return  # the model config's own check says what is missing
    name = section["model"]
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; known models: {sorted(MODELS)}")


def tidy_run_dir(run_dir: Path) -> None:
    """Before resuming: put back a model folder whose save was killed mid-swap, then drop the
    temporary files and folders that killed writes left."""
    recover_model_folder(run_dir / "model")
    for tmp in run_dir.glob(".model.*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in run_dir.glob(".run.yaml.tmp-*"):
        tmp.unlink(missing_ok=True)


def train_run(config: RunConfig | dict | None, run_dir: str | Path, resume: bool = False,
              overwrite: bool = False) -> RunResult:
    """Load data, build (or restore) the model, train it, save the best weights to run_dir/model.

    A new run checks everything it can (config, data, model) before it touches run_dir, and
    only replaces (overwrite=True) a folder that is an omnivae run folder. With resume=True,
    `config` (optional, partial) may change the keys in RESUMABLE_KEYS, e.g.
    {"train": {"max_epochs": 30}} to train a finished run further; run.yaml is updated.
    SIGTERM / SIGINT stop training with last.ckpt written and raise TrainingInterrupted;
    model/ then keeps the initial weights, marked untrained (loading them warns)."""
    run_dir = Path(run_dir)
    writer = not launched_as_worker()  # rank zero prepared the folder before the other ranks started
    if resume:
        prepare_run_dir(run_dir, resume, overwrite)
        saved = read_config_file(run_dir / "run.yaml")
        merged = saved if config is None else resume_config(saved, config, "the resume changes")
        config = RunConfig.from_dict(merged, "run.yaml" if merged is saved else "run.yaml with the resume changes")
        if writer:
            tidy_run_dir(run_dir)
            if merged != saved:  # later resumes go on with the changed values
                atomic_write_bytes(run_dir / "run.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    else:
        if isinstance(config, dict) or config is None:
            config = RunConfig.from_dict(config or {}, "run config")
        if writer:
            check_run_dir(run_dir, overwrite)  # refuse early; nothing is touched until the model is built
        check_model_name(config.model)  # before the data are loaded or generated (that may take a while)
    seed_everything(config.train.seed)
    splits = split_data(load_source(config.data), config)
    if resume:
        with warnings.catch_warnings():  # the initial weights of an unfinished run are what resuming expects
            warnings.simplefilter("ignore", UntrainedModelWarning)
            model = load_model(run_dir / "model")
    else:
        model = build_model(resolve_model_config(config.model, splits.train), splits.train)
        config = config.model_copy(update={"model": model.config.to_dict()})
        select_module(model, config.train)  # train options that do not fit the model fail here too
        if writer:  # run.yaml last: a folder with run.yaml always has its model folder
            prepare_run_dir(run_dir, resume, overwrite)
            save_model(model, run_dir / "model", extra={"trained": False})
            atomic_write_bytes(run_dir / "run.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    train = TensorData.from_raw(model, splits.train)
    val = TensorData.from_raw(model, splits.val) if len(splits.val) else None
    started = time.monotonic()
    result = fit(model, train, val, config.train, run_dir, resume=resume)
    start = next((c.start_step for c in result.trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    steps_trained = 0 if start is None else result.trainer.global_step - start
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
        record_training(run_dir, time.monotonic() - started, result.trainer, splits)
    return RunResult(model.eval(), run_dir, splits, config, steps_trained=steps_trained)



def record_training(run_dir: Path, seconds: float, trainer, splits: Splits) -> None:
    """Add this training call's wall time (summed over resumed attempts), the run's epochs and steps
    and its split sizes to omnivae-run.json, for the report."""
    path = run_dir / RUN_MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = {}
    before = (marker.get("training") or {}).get("wall_seconds", 0.0)
    marker["training"] = {"wall_seconds": round(before + seconds, 3), "epochs": trainer.current_epoch,
                          "steps": trainer.global_step, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "examples": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}}
    atomic_write_bytes(path, (json.dumps(marker, indent=2) + "\n").encode())

def load_weights_from_checkpoint(model: MultimodalModel, path: str | Path) -> None:
    state = read_checkpoint(path)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not fit this model: {exc}") from None
