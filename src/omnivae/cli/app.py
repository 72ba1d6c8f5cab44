"""The typer app shared by every verb module, and the one way errors are shown."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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


def show_warnings(caught) -> None:
    """Warnings raised while a verb ran, one line each on stderr."""
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)


@contextmanager
def reporting() -> Iterator[None]:
    """The body of a verb: the UserWarnings it raises are shown one line each on stderr (also when
    it fails), and a library error ends it through `fail` (exit 2, no traceback)."""
    from omnivae.errors import OmniVAEError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except OmniVAEError as exc:
            show_warnings(w for w in caught if issubclass(w.category, UserWarning))
            fail(exc)
    show_warnings(w for w in caught if issubclass(w.category, UserWarning))
