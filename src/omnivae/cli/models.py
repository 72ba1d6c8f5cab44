"""`omnivae models`: every model, its reference, and one model's options with their defaults."""
from __future__ import annotations

import re
from typing import Optional

import typer
from rich.table import Table

from omnivae.cli.app import app, console, fail


def option_rows(config_class) -> list[tuple[str, str, str]]:
    """(key, type, default) of every option of a model config (modalities are set per modality)."""
    rows = []
    for key, field in config_class.model_fields.items():
        if key in ("model", "modalities"):
            continue
        ann = field.annotation
        kind = ann.__name__ if isinstance(ann, type) else re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", str(ann))
        default = field.get_default(call_default_factory=True)
        rows.append((key, kind, "required" if field.is_required() else repr(default)))
    return rows


@app.command("models")
def models(name: Optional[str] = typer.Argument(None, help="a model name: list its options and defaults")):
    """The models: what each is and its paper; with a NAME, that model's options and defaults
    (set them under `model:` in a run config, or with --set model.KEY=VALUE)."""
    from omnivae.errors import ConfigError, did_you_mean
    from omnivae.models import MODELS

    if name is None:
        table = Table("model", "what it is", "reference")
        for key in sorted(MODELS):
            table.add_row(key, MODELS[key].about, MODELS[key].paper)
        console.print(table)
        console.print("omnivae models NAME lists a model's options with their defaults")
        return
    if name not in MODELS:
        fail(ConfigError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; known models: "
                         f"{', '.join(sorted(MODELS))}"))
    cls = MODELS[name]
    console.print(f"[bold]{name}[/]: {cls.about} ({cls.paper})")
    table = Table("option", "type", "default")
    for row in option_rows(cls.config_class):
        table.add_row(*row)
    console.print(table)
    if cls.supports_conditional_prior and "conditional_prior" in cls.config_class.model_fields:
        console.print("conditional_prior: `omnivae train` and train_run fit one after training for models of two or "
                      "more modalities (generation draws from it); set it to null to go without")
    from omnivae.train.config import TrainConfig

    train = TrainConfig()
    defaults = [f"{section}.{k}={v}" for section, values in cls.run_defaults(train).items() for k, v in values.items()]
    if defaults:
        console.print(f"runs of {name} default to " + ", ".join(defaults)
                      + f" (with train.max_epochs {train.max_epochs}) unless the run config sets them")
