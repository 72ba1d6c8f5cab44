"""The typer app shared by every verb module, and the one way errors are shown."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="omnivae: multimodal autoencoders and VAEs. Train on paired images, text, "
                       "labels and vectors; generate across modalities; evaluate.")
console = Console()


def fail(exc: Exception) -> None:
    """Print the library's error message (no traceback) and exit with status 2."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}")  # "[hub]" in a hint is text, not markup
    raise typer.Exit(code=2)
