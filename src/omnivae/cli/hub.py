"""Verbs that share models through the Hugging Face Hub: `omnivae push`, `omnivae pull` (docs/sharing.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from omnivae.cli.app import app, console, fail
from omnivae.errors import OmniVAEError

ENDPOINT_HELP = "Hub address (default: $HF_ENDPOINT, else https://huggingface.co)."



@app.command()
def push(
    model_dir: Path = typer.Argument(..., help="A saved model folder, e.g. runs/demo/model."),
    repo: str = typer.Argument(..., help="Hub repository: user/name (created if needed)."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    endpoint: Optional[str] = typer.Option(None, help=ENDPOINT_HELP),
    revision: Optional[str] = typer.Option(None, help="Branch to upload to (created if needed; default main)."),
):
    """Upload a model folder (config, safetensors weights, tokenizers) with a generated model card. The token comes from HF_TOKEN or `hf auth login`."""
    try:
        from omnivae.hub import push as push_model

        url = push_model(model_dir, repo, private=private, endpoint=endpoint, revision=revision)
    except OmniVAEError as exc:
        fail(exc)
    console.print(f"[green]pushed[/] {escape(str(model_dir))} to {escape(url)}")


@app.command()
def pull(
    repo: str = typer.Argument(..., help="Hub repository: user/name, user/name@revision or hf://user/name."),
    out: Path = typer.Option(..., help="Folder to write the model to."),
    overwrite: bool = typer.Option(False, help="Replace --out if it already exists."),
    endpoint: Optional[str] = typer.Option(None, help=ENDPOINT_HELP),
):
    """Download a model from the Hub (JSON and safetensors only; a repository with any other file type is refused)."""
    try:
        from omnivae.hub import pull as pull_model

        folder = pull_model(repo, endpoint=endpoint, out=out, overwrite=overwrite)
    except OmniVAEError as exc:
        fail(exc)
    console.print(f"[green]pulled[/] {escape(repo)} into {escape(str(folder))}; "
                  f"load it with omnivae.load({escape(repr(str(folder)))})")
