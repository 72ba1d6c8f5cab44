"""What a run folder says about its run: the config, the split sizes and how long training took.

run.yaml holds the resolved config; omnivae-run.json's "training" entry (written when training
ends) the wall time, epochs, steps and split sizes; logs/metrics*.csv the epochs and steps of
runs trained before that entry existed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnivae.report.common import PathLike
from omnivae.report.curves import read_rows
from omnivae.run_folder import RunFolder

# the training options shown in the configuration table (run.yaml, shown whole below it, has all)
TRAIN_KEYS = ("max_epochs", "max_steps", "max_minutes", "batch_size", "lr", "weight_decay", "patience",
              "val_fraction", "kl_warmup_epochs", "grad_clip", "seed", "precision", "accelerator", "devices",
              "adversarial_weight")
# spec fields that say how big a modality is, whatever its kind
SIZE_KEYS = (("shape", "shape {}"), ("dim", "{} values"), ("num_classes", "{} classes"),
             ("vocab_size", "vocabulary of {} tokens"), ("max_len", "at most {} tokens"))


@dataclass
class RunSummary:
    config: dict[str, Any]  # run.yaml, or {"model": the model's config} without a run folder
    config_source: str
    training: dict[str, Any] = field(default_factory=dict)  # wall_seconds, epochs, steps, examples
    training_source: str = ""
    run_dir: Path | None = None


def read_summary(model_config: dict[str, Any], run_dir: PathLike | None = None,
                 metrics_csv: PathLike | None = None) -> RunSummary:
    """The run's config and training record; missing pieces are left out, never an error."""
    run_dir = Path(run_dir) if run_dir is not None else None
    folder = RunFolder(run_dir) if run_dir is not None else None
    config, source = {"model": model_config}, "the model's config.json (no run folder given)"
    saved = folder.saved_config() if folder is not None else None
    if saved is not None:
        config, source = saved, str(folder.config_file)
    summary = RunSummary(config, source, run_dir=run_dir)
    record = folder.training_record() if folder is not None else {}
    if record:
        summary.training, summary.training_source = record, str(folder.marker)
    elif metrics_csv is not None:
        summary.training, summary.training_source = counts_from_csv(metrics_csv), f"{Path(metrics_csv).name} (logs)"
    return summary


def counts_from_csv(metrics_csv: PathLike) -> dict[str, int]:
    """Epochs and optimiser steps as far as the CSV log shows them (its step column is 0-based)."""
    try:
        _, cols = read_rows(metrics_csv)
    except Exception:  # an unreadable log leaves the counts unknown
        return {}
    out = {}
    for key, name in (("epoch", "epochs"), ("step", "steps")):
        values = cols.get(key, np.array([]))
        values = values[np.isfinite(values)]
        if values.size:
            out[name] = int(values.max()) + 1
    return out


def leaves(tree: Any) -> dict[str, Any]:
    """{"data.options.n": 300, ...}; lists are shown as one value."""
    from omnivae.run import config_leaves

    return {k: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in config_leaves(tree).items()}


def config_table(config: dict[str, Any]) -> dict[str, Any]:
    """The settings worth a glance: data and model (without the per-modality networks) and the main
    training options."""
    model = {k: v for k, v in (config.get("model") or {}).items() if k != "modalities"}
    train = {k: v for k, v in (config.get("train") or {}).items() if k in TRAIN_KEYS}
    table = leaves({"data": config.get("data") or {}, "model": model, "train": train})
    return {k: ("null" if v is None else v) for k, v in table.items()}


def modality_size(spec: dict[str, Any]) -> str:
    parts = []
    for key, text in SIZE_KEYS:
        value = spec.get(key)
        if value:
            parts.append(text.format("×".join(map(str, value)) if isinstance(value, (list, tuple)) else value))
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """3725.2 -> '1 h 2 min 5 s'; 42.31 -> '42.3 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours} h " if hours else "") + f"{minutes} min {secs} s"
