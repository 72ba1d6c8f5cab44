"""Verbs that train and use a model: demo, train, generate, version."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from omnivae.cli.app import app, console, fail, reporting
from omnivae.errors import ConfigError, OmniVAEError
from omnivae.run_folder import RunFolder

SHAPES_LEVELS = ("easy", "medium", "hard", "partial")  # omnivae.data.shapes.LEVELS, named here so --help needs no numpy
MAX_SEED = 2**32 - 1  # numpy's seeds; torch takes larger ones, but one range for every verb


SET_SECTIONS = ("data", "model", "train")


def apply_overrides(config: dict, pairs: list[str], allowed: tuple[str, ...] = SET_SECTIONS) -> dict:
    """--set KEY=VALUE, one meaning on every verb: KEY is a dotted path into the run config
    (train.max_epochs=3, model.latent_dim=32, data.options.n=500); VALUE is read as a YAML scalar."""
    from omnivae.errors import did_you_mean

    for pair in pairs:
        key, eq, value = pair.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(parts):
            raise ConfigError(f"--set expects section.key=value (e.g. train.max_epochs=3), got {pair!r}")
        if parts[0] not in allowed:
            hint = did_you_mean(parts[0], allowed)
            if not hint and len(parts) == 1 and "data" in allowed:
                hint = f" (a data option is data.options.{parts[0]}={value})"
            raise ConfigError(f"--set {pair}: {parts[0]!r} is not a section of the run config; the key starts with "
                              f"one of {', '.join(allowed)}{hint}")
        node = config
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair}: {'.'.join(parts[:i + 1])} holds {node!r}, not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair}: the value is not valid YAML ({exc})") from None
    return config


def interrupted(exc, run_dir: Path) -> None:
    """Say what an interrupted training left and how to go on, then exit 128 + signal (130, 143)."""
    name = signal.Signals(exc.signum).name
    saved = f"checkpoint saved at step {exc.step}: {exc.checkpoint}" if exc.checkpoint is not None else \
        "no new checkpoint (the last one written is kept)"
    console.print(f"[yellow]interrupted[/] by {name}: {saved}. {RunFolder(run_dir).model} holds no trained weights from "
                  f"this attempt. Continue with: omnivae train --resume {run_dir}")
    raise typer.Exit(code=exc.exit_code)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder to write (an existing omnivae run folder there "
                                                     "is replaced; any other non-empty folder is refused)."),
    minutes: float = typer.Option(4.0, min=0.01, help="Training time budget in minutes."),
    level: str = typer.Option("partial", help=f"Shapes difficulty level: {', '.join(SHAPES_LEVELS)}."),
    model: str = typer.Option("mopoe", help="Model family (mvae, mmvae, mopoe)."),
    n: int = typer.Option(6000, help="Number of synthetic examples."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Random seed for data and training."),
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
    data: Optional[str] = typer.Option(None, help="Train on a data folder (images or WAV files + "
                                                  "metadata.jsonl/csv, or a COCO captions_*.json), an arrays file "
                                                  "(.npz, .parquet), or a built-in source (shapes, mnist, ...)."),
    devices: Optional[str] = typer.Option(None, help="Devices per node (e.g. 2, or 'auto')."),
    num_nodes: Optional[int] = typer.Option(None, help="Number of nodes for distributed training."),
    strategy: Optional[str] = typer.Option(None, help="Lightning strategy, e.g. ddp or ddp_spawn."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.max_epochs=3"),
):
    """Train a model from a run config; the run folder gets the model, checkpoints and logs.

    SIGTERM or Ctrl+C stops training with a checkpoint (exit 143 / 130); --resume continues it."""
    from omnivae.config import read_config_file
    from omnivae.run import train_run
    from omnivae.train.trainer import launched_as_worker
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
            cfg["data"] = {**cfg.get("data", {}), **data_section(data)}
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
        hint = (f"continue with: omnivae train --resume {run_dir}" if RunFolder(run_dir).has_config()
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
    console.print(f"[green]trained[/] {result.config.model['model']}; model saved in {RunFolder(result.run_dir).model}")


def data_section(data: str) -> dict:
    """--data as the same verbs read it: an existing folder or file, else a built-in source name."""
    from omnivae.data.inspect import guess_source
    from omnivae.data.sources import SOURCES
    from omnivae.errors import did_you_mean

    if Path(data).exists():
        return {"source": guess_source(Path(data)), "options": {"path": str(data)}}
    built_in = [s for s in sorted(SOURCES) if s not in ("folder", "coco", "arrays")]  # those need a path
    if data in built_in:
        return {"source": data, "options": {}}
    raise ConfigError(f"--data {data}: no such file or folder, and not a built-in source"
                      f"{did_you_mean(data, built_in)} (built-in: {', '.join(built_in)})")


def split_names(values: Optional[list[str]]) -> list[str]:
    """--to image,label and --to image --to label mean the same."""
    return [name.strip() for v in values or [] for name in v.split(",") if name.strip()]


@app.command()
def generate(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (run_dir/model)."),
    source: Optional[str] = typer.Option(None, "--from", help="Modality to condition on, e.g. text. Leave it out "
                                                              "(and give no inputs) to sample every modality jointly."),
    value: Optional[list[str]] = typer.Argument(None, help="Input(s): captions, labels, image files, .npy arrays "
                                                           "or comma-separated numbers (after `--` when one "
                                                           "starts with '-': -- -1.5,2)."),
    to: Optional[list[str]] = typer.Option(None, help="Target modalities, comma-separated or repeated: --to image,label "
                                                      "(default: all others)."),
    n: int = typer.Option(1, help="Samples per input (1 to 10,000)."),
    out: Path = typer.Option(Path("generated"), help="Folder for the outputs: PNG files, .npy files, outputs.json."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Random seed; the same seed gives the same outputs "
                                                         "(default: a new one, written to outputs.json)."),
    temperature: Optional[float] = typer.Option(None, min=0.0, help="Unset: samples (a fitted conditional prior at its "
                                                "configured temperature, 0.7 by default); 0 decodes the posterior mean "
                                                "(no randomness); other values scale a fitted conditional prior's noise "
                                                "(1: its fitted law)."),
    strategy: str = typer.Option("greedy", help="Text decoding: greedy, sample or beam."),
):
    """Generate target modalities from the given one, e.g. `omnivae generate --model runs/demo/model --from text "a blue square"`.

    Writes one PNG per generated image (and a grid per input when --n > 1), one .npy file per
    input for vectors and signals, and outputs.json listing everything with its JSON values.
    Caption words the model never saw in training are named in a warning (on stderr)."""
    import json

    from omnivae.cli.outputs import out_folder, removed_on_failure
    from omnivae.tasks.generate import check_sample_count, generate_from_inputs

    targets, values = split_names(to), list(value or [])
    with reporting():
        check_sample_count(n, "--n")
        out_folder(out, "outputs.json", "generate")
        swallowed = [v for v in values if targets and v not in targets and v in _model_names(model)]
        if swallowed:
            raise ConfigError(f"{swallowed[0]!r} was read as an input, but it names a modality: for several "
                              f"targets write --to {','.join(targets + swallowed)}")
        with removed_on_failure(out):
            summary = generate_from_inputs(model, source, values, targets, n, out, seed=seed,
                                           temperature=temperature, strategy=strategy)
    inputs = values or ["(joint sample)"]
    for name, entries in summary["outputs"].items():
        for given, entry in zip(inputs, entries):
            shown = entry.get("values")
            shown = json.dumps(shown) if shown is not None else ", ".join(str(out / f) for f in entry.get("files", []))
            files = entry.get("grid") or entry.get("file")
            extra = f" ({out / files})" if files else ""
            console.print(f"[bold]{name}[/] from {given!r}: {shown}{extra}", markup=True, highlight=False)
    console.print(f"seed {summary['seed']}; everything is listed in {out / 'outputs.json'}")


def _model_names(model_dir: Path) -> list[str]:
    """Modality names of a saved model, read from its config (no weights loaded); [] if unreadable."""
    import json

    try:
        return list(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["config"]["modalities"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


@app.command()
def version():
    """Print the omnivae version."""
    from omnivae.version import __version__

    console.print(__version__)
