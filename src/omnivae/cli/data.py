"""Verbs about data: `omnivae data inspect PATH`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from omnivae.cli.app import app, console, fail
from omnivae.errors import OmniVAEError

data_app = typer.Typer(no_args_is_help=True, help="Look at data before training on it.")
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def inspect_data(
    path: Optional[Path] = typer.Argument(None, help="A folder of images with metadata.jsonl/csv, an .npz "
                                                     "or .parquet file, or a folder of .npy files."),
    source: Optional[str] = typer.Option(None, help="A named data source instead of guessing from the path: "
                                                    "shapes, mnist, polymnist, folder, arrays."),
    set_: list[str] = typer.Option([], "--set", help="A source option, e.g. --set n=500 --set image_size=32"),
):
    """Show each modality's kind, shape or vocabulary, and how many examples miss it."""
    from omnivae.data.inspect import inspect_command

    try:
        options = {}
        for pair in set_:
            if "=" not in pair:
                raise OmniVAEError(f"--set expects key=value, got {pair!r}")
            key, value = pair.split("=", 1)
            options[key] = yaml.safe_load(value)
        inspect_command(path, source, options, console=console)
    except OmniVAEError as exc:
        fail(exc)
