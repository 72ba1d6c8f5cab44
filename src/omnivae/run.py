"""A training run: data + model + training options -> a run folder.

The folder's layout (marker, config, model/, checkpoints/, logs/) is omnivae.run_folder's;
evaluation adds what it writes (metrics.json, figures/).
"""
from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from omnivae.config import StrictModel
from omnivae.data.labelled import keep_labels
from omnivae.data.raw import RawData, split_indices
from omnivae.data.sources import DataConfig, load_source
from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError, ModelFileError
from omnivae.io import UntrainedModelWarning, load_model, save_model
from omnivae.modalities import infer_spec
from omnivae.models import MODELS, build_model, model_config_from_dict
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.run_folder import CONFIG, RunFolder
from omnivae.train.config import TrainConfig

# the training machinery (Lightning) is imported inside train_run, so that commands which only
# load a run's model and data (evaluate, generate, embed) do not pay for it

if TYPE_CHECKING:
    from omnivae.data.lazy import LazyImageFolder, LazyRows

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
    """The run's data parts: in memory, or (data.stream) rows of a folder read batch by batch."""

    train: RawData | LazyRows
    val: RawData | LazyRows
    test: RawData | LazyRows


@dataclass
class RunResult:
    model: MultimodalModel
    run_dir: Path
    splits: Splits
    config: RunConfig
    steps_trained: int | None = None  # optimiser steps this call ran (0: a resumed run that had finished)


def split_fractions(config: RunConfig) -> tuple[float, float, float]:
    """(train, validation, test) fractions of the data."""
    test_f, val_f = config.data.test_fraction, config.train.val_fraction
    if not 0 <= test_f < 1 or not 0 <= val_f < 1 or test_f + val_f >= 1:
        raise ConfigError(f"test_fraction {test_f} + val_fraction {val_f} must leave training data")
    return 1 - test_f - val_f, val_f, test_f


def split_data(raw: RawData, config: RunConfig) -> Splits:
    train, val, test = raw.split(split_fractions(config), seed=config.data.split_seed)
    if config.data.labelled is not None:  # validation and test keep their labels, to score against
        train = keep_labels(train, config.data.labelled, config.data.labelled_modality, config.data.split_seed)
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
                          f"trained with the values in {CONFIG}. On resume only these may change: "
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


def with_model_run_defaults(config: RunConfig) -> RunConfig:
    """`config` with the options its model recommends for runs (MultimodalModel.run_defaults) filled
    in where the config does not set them; a value the user gave, even the library default, stays."""
    cls = MODELS.get(config.model.get("model"))
    defaults = cls.run_defaults(config.train) if cls else {}
    train = {k: v for k, v in defaults.get("train", {}).items() if k not in config.train.model_fields_set}
    model = {k: v for k, v in defaults.get("model", {}).items() if k not in config.model}
    if train:
        config = config.model_copy(update={"train": config.train.model_copy(update=train)})
    return config.model_copy(update={"model": {**config.model, **model}}) if model else config


def train_run(config: RunConfig | dict | None, run_dir: str | Path, resume: bool = False,
              overwrite: bool = False) -> RunResult:
    """Load data, build (or restore) the model, train it, save the best weights to run_dir/model.

    A new run checks everything it can (config, data, model) before it touches run_dir, and
    only replaces (overwrite=True) a folder that is an omnivae run folder. With resume=True,
    `config` (optional, partial) may change the keys in RESUMABLE_KEYS, e.g.
    {"train": {"max_epochs": 30}} to train a finished run further; run.yaml is updated.
    SIGTERM / SIGINT stop training with last.ckpt written and raise TrainingInterrupted;
    model/ then keeps the initial weights, marked untrained (loading them warns).
    The training record (omnivae-run.json) says where the call's time went ("phases")."""
    from omnivae.train.adversarial import select_module
    from omnivae.train.callbacks import LastCheckpoint
    from omnivae.threads import process_age
    from omnivae.train.timing import Laps
    from omnivae.train.trainer import fit, launched_as_worker

    startup, laps = process_age(), Laps()  # start-up: from the process's start to here
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    writer = not launched_as_worker()  # rank zero prepared the folder before the other ranks started
    if resume:
        folder.check_resumable()
        saved = folder.read_config()
        merged = saved if config is None else resume_config(saved, config, "the resume changes")
        config = RunConfig.from_dict(merged, CONFIG if merged is saved else f"{CONFIG} with the resume changes")
        if writer:
            folder.tidy()
            if merged != saved:  # later resumes go on with the changed values
                folder.write_config(config.to_dict())
    else:
        if isinstance(config, dict) or config is None:
            config = RunConfig.from_dict(config or {}, "run config")
        if writer:
            folder.check_new(overwrite)  # refuse early; nothing is touched until the model is built
        check_model_name(config.model)  # before the data are loaded or generated (that may take a while)
        config = with_model_run_defaults(config)
    seed_everything(config.train.seed)
    if config.data.stream:  # images stay on disk; the model is fitted on a sample of the training rows
        splits, fit_on = stream_splits(config)
    else:
        splits = split_data(load_source(config.data), config)
        fit_on = splits.train
    laps.lap("data")
    if resume:
        with warnings.catch_warnings():  # the initial weights of an unfinished run are what resuming expects
            warnings.simplefilter("ignore", UntrainedModelWarning)
            model = load_model(folder.model)
    else:
        model = build_model(resolve_model_config(config.model, fit_on), fit_on)
        config = config.model_copy(update={"model": model.config.to_dict()})
        select_module(model, config.train)  # train options that do not fit the model fail here too
        if writer:  # the config last: a folder with a saved config always has its model folder
            folder.create(overwrite)
            save_model(model, folder.model, extra={"trained": False})
            folder.write_config(config.to_dict())
    laps.lap("model")
    if config.data.stream:
        from omnivae.data.lazy import LazyRows

        splits = Splits(*(LazyRows(part.folder, part.rows, model) for part in (splits.train, splits.val, splits.test)))
        train, val = splits.train, splits.val if len(splits.val) else None
    else:
        train = TensorData.from_raw(model, splits.train)
        val = TensorData.from_raw(model, splits.val) if len(splits.val) else None
    laps.lap("prepare")
    started = time.monotonic()
    result = fit(model, train, val, config.train, run_dir, resume=resume)
    fit_seconds = laps.lap("fit")
    start = next((c.start_step for c in result.trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    steps_trained = 0 if start is None else result.trainer.global_step - start
    if writer and result.trainer.global_rank == 0:
        best = result.best_checkpoint or (str(result.last_checkpoint) if result.last_checkpoint.is_file() else None)
        if best:
            load_weights_from_checkpoint(model, best)
        if getattr(model.config, "prior", None) is not None:
            from omnivae.priors import fit_prior

            fit_prior(model, fit_on)
        prior_fit = None
        if getattr(model, "conditional_prior", None) is not None:
            from omnivae.priors.conditional import fit_conditional_prior

            fit_conditional_prior(model, train if isinstance(train, TensorData) else fit_on, seed=config.train.seed,
                                  training_steps=result.trainer.global_step)  # its cost follows training's
            prior_fit = model.conditional_prior.last_fit  # the second training stage's steps, for the record
        laps.lap("priors")
        save_model(model, folder.model)
        laps.lap("save")
        phases = {"startup_s": None if startup is None else round(startup, 3),
                  **{f"{k}_s": round(v, 3) for k, v in laps.seconds.items() if k != "fit"},
                  "fit": result.clock.record(fit_seconds), "fit_steps": result.clock.steps,
                  **({"prior_fit": prior_fit} if prior_fit else {})}
        record_training(folder, time.monotonic() - started, result.trainer, splits, phases)
    return RunResult(model.eval(), run_dir, splits, config, steps_trained=steps_trained)


@dataclass
class StreamedRows:
    """Rows of a folder opened lazily, before the model that prepares them exists (then: LazyRows)."""

    folder: LazyImageFolder
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def stream_splits(config: RunConfig) -> tuple[Splits, RawData]:
    """data.stream: the folder opened lazily and split into the rows split_data would put in each
    part in memory, and the first data.stream_sample training rows read into memory (the model's
    preprocessing and its priors are fitted on them)."""
    from omnivae.data.lazy import open_stream

    folder = open_stream(config.data.options)
    parts = split_indices(len(folder), split_fractions(config), seed=config.data.split_seed)
    return Splits(*(StreamedRows(folder, rows) for rows in parts)), folder.to_raw(parts[0][:config.data.stream_sample])


def record_training(folder: RunFolder, seconds: float, trainer, splits: Splits, phases: dict) -> None:
    """Add this training call's wall time (summed over resumed attempts), the run's epochs and steps
    and its split sizes to the run's training record, for the report; `phases`: where this call's
    time went (start-up, data, model, prepare, fit split into steps, validation and checkpoints,
    priors, save; omnivae.train.timing)."""
    before = folder.training_record().get("wall_seconds", 0.0)
    folder.write_training_record({
        "wall_seconds": round(before + seconds, 3), "epochs": trainer.current_epoch, "steps": trainer.global_step,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "examples": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "phases": phases})


def load_weights_from_checkpoint(model: MultimodalModel, path: str | Path) -> None:
    from omnivae.train.checkpoint import read_checkpoint

    state = read_checkpoint(path)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not fit this model: {exc}") from None
