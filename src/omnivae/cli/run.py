"""Verbs that train and use a model: demo, train, generate, version."""
from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from omnivae.cli.app import app, console, fail
from omnivae.data.shapes import LEVELS
from omnivae.errors import ConfigError, OmniVAEError


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


def interrupted(exc, run_dir: Path) -> None:
    """Say what an interrupted training left and how to go on, then exit 128 + signal (130, 143)."""
    name = signal.Signals(exc.signum).name
    saved = f"checkpoint saved at step {exc.step}: {exc.checkpoint}" if exc.checkpoint is not None else \
        "no new checkpoint (the last one written is kept)"
    console.print(f"[yellow]interrupted[/] by {name}: {saved}. {run_dir}/model holds no trained weights from "
                  f"this attempt. Continue with: omnivae train --resume {run_dir}")
    raise typer.Exit(code=exc.exit_code)


def show_warnings(caught) -> None:
    """Warnings raised while a verb ran, one line each on stderr."""
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder to write (an existing omnivae run folder there "
                                                     "is replaced; any other non-empty folder is refused)."),
    minutes: float = typer.Option(4.0, help="Training time budget in minutes."),
    level: str = typer.Option("partial", help=f"Shapes difficulty level: {', '.join(LEVELS)}."),
    model: str = typer.Option("mopoe", help="Model family (mvae, mmvae, mopoe)."),
    n: int = typer.Option(6000, help="Number of synthetic examples."),
    seed: int = typer.Option(0, help="Random seed for data and training."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Train the default image+caption model on the built-in shapes data, then write metrics.json, figures (text-to-image, image-to-caption, joint samples) and report.html."""
    from omnivae.tasks.demo import run_demo
    from omnivae.train.callbacks import TrainingInterrupted

    try:
        summary = run_demo(out, minutes=minutes, level=level, model=model, n=n, seed=seed, progress=progress)
    except TrainingInterrupted as exc:
        interrupted(exc, out)
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
    out: Optional[Path] = typer.Option(None, help="Run folder to write (default runs/train)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint; "
                                          "--set may change how long it trains (train.max_epochs, max_steps, "
                                          "max_minutes, patience) and how it runs, nothing else."),
    overwrite: bool = typer.Option(False, help="Replace --out if it is an existing omnivae run folder "
                                               "(any other non-empty folder is refused)."),
    data: Optional[Path] = typer.Option(None, help="Train on a data folder (images + metadata.jsonl/csv) or arrays file."),
    devices: Optional[str] = typer.Option(None, help="Devices per node (e.g. 2, or 'auto')."),
    num_nodes: Optional[int] = typer.Option(None, help="Number of nodes for distributed training."),
    strategy: Optional[str] = typer.Option(None, help="Lightning strategy, e.g. ddp or ddp_spawn."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.max_epochs=3"),
):
    """Train a model from a run config; the run folder gets the model, checkpoints and logs.

    SIGTERM or Ctrl+C stops training with a checkpoint (exit 143 / 130); --resume continues it."""
    from omnivae.config import read_config_file
    from omnivae.run import launched_as_worker, train_run
    from omnivae.train.callbacks import TrainingInterrupted

    run_dir = resume if resume is not None else (out or Path("runs/train"))
    try:
        if resume is not None:
            if out is not None and out.resolve() != resume.resolve():
                raise ConfigError(f"--out {out} is not the resumed run {resume}: a resumed run continues in its own "
                                  "folder (drop --out, or drop --resume to start a new run there)")
            if overwrite:
                raise ConfigError("--overwrite cannot be combined with --resume (resuming keeps the run folder)")
        cfg = read_config_file(config) if config else {}
        if data is not None:
            from omnivae.data.inspect import guess_source

            source = guess_source(data)
            cfg["data"] = {**cfg.get("data", {}), "source": source, "options": {"path": str(data)}}
        for key, value in (("devices", devices), ("num_nodes", num_nodes), ("strategy", strategy)):
            if value is not None:
                cfg.setdefault("train", {})[key] = int(value) if key == "devices" and str(value).isdigit() else value
        cfg = apply_overrides(cfg, set_)
        if resume is None and "data" not in cfg:
            raise ConfigError("omnivae train needs data: --config FILE (a run config with a data: section), "
                              "--data FOLDER_OR_FILE, or --set data.source=shapes; --resume RUN continues a run. "
                              "`omnivae demo` trains on the built-in data with no options")
        if resume is not None:  # only the keys given are compared with run.yaml; unsafe changes are refused
            result = train_run(cfg or None, resume, resume=True)
        else:
            result = train_run(cfg, run_dir, overwrite=overwrite)
    except TrainingInterrupted as exc:
        if not launched_as_worker():
            interrupted(exc, run_dir)
        raise typer.Exit(code=exc.exit_code)
    except KeyboardInterrupt:  # Ctrl+C outside the training loop (setting up, or saving the result)
        hint = (f"continue with: omnivae train --resume {run_dir}" if (run_dir / "run.yaml").is_file()
                else "nothing was trained")
        console.print(f"[yellow]interrupted[/] outside the training loop; {hint}")
        raise typer.Exit(code=130)
    except OmniVAEError as exc:
        fail(exc)
    if launched_as_worker():  # with strategy ddp, rank 1 runs this command too
        return
    if resume is not None and result.steps_trained == 0:
        t = result.config.train
        console.print(f"[yellow]already finished[/]: {resume} reached its limits (train.max_epochs {t.max_epochs}, "
                      f"max_steps {t.max_steps}, max_minutes {t.max_minutes}, or early stopping); nothing more was "
                      "trained. Train further with e.g. --set train.max_epochs=N")
        return
    console.print(f"[green]trained[/] {result.config.model['model']}; model saved in {result.run_dir / 'model'}")


@app.command()
def generate(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (run_dir/model)."),
    source: str = typer.Option(..., "--from", help="Modality to condition on, e.g. text."),
    value: list[str] = typer.Argument(..., help="Input(s): captions, labels, image files or .npy arrays."),
    to: Optional[list[str]] = typer.Option(None, help="Target modalities (default: all others)."),
    n: int = typer.Option(1, help="Samples per input (1 to 10,000)."),
    out: Path = typer.Option(Path("generated"), help="Folder for generated images and outputs.json."),
    strategy: str = typer.Option("greedy", help="Text decoding: greedy, sample or beam."),
):
    """Generate target modalities from the given one, e.g. `omnivae generate --model runs/demo/model --from text "a blue square"`.

    Caption words the model never saw in training are named in a warning (on stderr)."""
    from omnivae.tasks.generate import check_sample_count, generate_from_inputs

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_sample_count(n, "--n")
            written = generate_from_inputs(model, source, value, to, n, out, strategy=strategy)
    except OmniVAEError as exc:
        show_warnings(w for w in caught if issubclass(w.category, UserWarning))
        fail(exc)
    show_warnings(w for w in caught if issubclass(w.category, UserWarning))
    for name, items in written.items():
        for item in items:
            console.print(f"[bold]{name}[/]: {item}")


@app.command()
def version():
    """Print the omnivae version."""
    from omnivae.version import __version__

    console.print(__version__)
