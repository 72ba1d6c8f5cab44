"""Verbs that train and use a model: demo, train, generate, version."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from omnivae.cli.app import app, console, fail
from omnivae.data.shapes import LEVELS
from omnivae.errors import OmniVAEError


def apply_overrides(config: dict, pairs: list[str]) -> dict:
    """--set train.max_epochs=3 model.latent_dim=32 (values parsed as YAML scalars)."""
    for pair in pairs:
        if "=" not in pair:
            raise OmniVAEError(f"--set expects key.path=value, got {pair!r}")
        key, value = pair.split("=", 1)
        node = config
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return config


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder to write (replaced if it exists)."),
    minutes: float = typer.Option(4.0, help="Training time budget in minutes."),
    level: str = typer.Option("partial", help=f"Shapes difficulty level: {', '.join(LEVELS)}."),
    model: str = typer.Option("mopoe", help="Model family (mvae, mmvae, mopoe)."),
    n: int = typer.Option(6000, help="Number of synthetic examples."),
    seed: int = typer.Option(0, help="Random seed for data and training."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Train the default image+caption model on the built-in shapes data, then write metrics.json, figures (text-to-image, image-to-caption, joint samples) and report.html."""
    from omnivae.tasks.demo import run_demo

    try:
        summary = run_demo(out, minutes=minutes, level=level, model=model, n=n, seed=seed, progress=progress)
    except OmniVAEError as exc:
        fail(exc)
    show_summary(summary)
    console.print(f"[green]wrote[/] {out}/ (model/, metrics.json, figures/, report.html)")


def show_summary(metrics: dict) -> None:
    table = Table(title="cross-modal accuracy")
    table.add_column("source -> target")
    table.add_column("all attributes", justify="right")
    for key, value in metrics.get("coherence", {}).items():
        table.add_row(key, f"{value.get('all', float('nan')):.3f}")
    if metrics.get("joint_coherence"):
        table.add_row("joint samples agree", f"{metrics['joint_coherence'].get('all', float('nan')):.3f}")
    console.print(table)


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON run config (data, model, train)."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder to write."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace --out if it already exists."),
    data: Optional[Path] = typer.Option(None, help="Train on a data folder (images + metadata.jsonl/csv) or arrays file."),
    devices: Optional[str] = typer.Option(None, help="Devices per node (e.g. 2, or 'auto')."),
    num_nodes: Optional[int] = typer.Option(None, help="Number of nodes for distributed training."),
    strategy: Optional[str] = typer.Option(None, help="Lightning strategy, e.g. ddp or ddp_spawn."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.max_epochs=3"),
):
    """Train a model from a run config; the run folder gets the model, checkpoints and logs."""
    from omnivae.config import read_config_file
    from omnivae.run import launched_as_worker, train_run

    try:
        if resume is not None:
            result = train_run(None, resume, resume=True)
        else:
            cfg = read_config_file(config) if config else {}
            if data is not None:
                from omnivae.data.inspect import guess_source

                source = guess_source(data)
                cfg["data"] = {**cfg.get("data", {}), "source": source, "options": {"path": str(data)}}
            for key, value in (("devices", devices), ("num_nodes", num_nodes), ("strategy", strategy)):
                if value is not None:
                    cfg.setdefault("train", {})[key] = int(value) if key == "devices" and str(value).isdigit() else value
            result = train_run(apply_overrides(cfg, set_), out, overwrite=overwrite)
    except OmniVAEError as exc:
        fail(exc)
    if not launched_as_worker():  # with strategy ddp, rank 1 runs this command too
        console.print(f"[green]trained[/] {result.config.model['model']}; model saved in {result.run_dir / 'model'}")


@app.command()
def generate(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (run_dir/model)."),
    source: str = typer.Option(..., "--from", help="Modality to condition on, e.g. text."),
    value: list[str] = typer.Argument(..., help="Input(s): captions, labels, image files or .npy arrays."),
    to: Optional[list[str]] = typer.Option(None, help="Target modalities (default: all others)."),
    n: int = typer.Option(1, help="Samples per input."),
    out: Path = typer.Option(Path("generated"), help="Folder for generated images and outputs.json."),
    strategy: str = typer.Option("greedy", help="Text decoding: greedy, sample or beam."),
):
    """Generate target modalities from the given one, e.g. `omnivae generate --model runs/demo/model --from text "a blue square"`."""
    from omnivae.tasks.generate import generate_from_inputs

    try:
        written = generate_from_inputs(model, source, value, to, n, out, strategy=strategy)
    except OmniVAEError as exc:
        fail(exc)
    for name, items in written.items():
        for item in items:
            console.print(f"[bold]{name}[/]: {item}")


@app.command()
def version():
    """Print the omnivae version."""
    from omnivae.version import __version__

    console.print(__version__)
