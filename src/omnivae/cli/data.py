"""Verbs about data: `omnivae data inspect PATH`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivae.cli.app import app, console, fail
from omnivae.errors import OmniVAEError

data_app = typer.Typer(no_args_is_help=True, help="Look at data before training on it.")
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def inspect_data(
    path: Optional[Path] = typer.Argument(None, help="A folder of images or WAV files with metadata.jsonl/csv "
                                                     "or a COCO captions_*.json, an .npz or .parquet file, or a "
                                                     "folder of .npy files."),
    source: Optional[str] = typer.Option(None, help="A named data source instead of guessing from the path: "
                                                    "shapes, mnist, polymnist, folder, coco, arrays."),
    set_: list[str] = typer.Option([], "--set", help="A source option, e.g. --set data.options.n=500 "
                                                     "(the same keys as in a run config)."),
):
    """Show each modality's kind, shape or vocabulary, and how many examples miss it."""
    from omnivae.data.inspect import inspect_command

    try:
        from omnivae.cli.run import apply_overrides

        section = apply_overrides({"data": {}}, set_, allowed=("data",))["data"]
        extra = sorted(set(section) - {"options"})
        if extra:
            raise OmniVAEError(f"--set data.{extra[0]}: only data.options.KEY=VALUE applies to data inspect")
        options = section.get("options", {})
        inspect_command(path, source, options, console=console)
    except OmniVAEError as exc:
        fail(exc)
