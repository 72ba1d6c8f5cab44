"""`omnivae serve`: a web page and a JSON API over a saved model (FastAPI + uvicorn)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivae.cli.app import app, console, fail
from omnivae.errors import ConfigError, OmniVAEError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (e.g. runs/demo/model)."),
    index: Optional[str] = typer.Option(None, "--index", help="Data to search and rank: a run folder (its test "
                                        "split), a built-in source name, a .npz file or a data folder."),
    set_: list[str] = typer.Option([], "--set", help="Override a data option of --index, e.g. --set data.options.n=500."),
    split: str = typer.Option("auto", help="Part of the --index data: auto, train, val, test or all."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_n: int = typer.Option(64, help="Largest number of draws per input a request may ask for."),
    max_body: int = typer.Option(2_000_000, help="Largest request body in bytes (larger: 413)."),
    timeout: float = typer.Option(30.0, help="Seconds a request may wait for and use the model (then 504)."),
    max_queue: int = typer.Option(256, help="Requests waiting for or using the model at once (more: 503)."),
    threads: int = typer.Option(1, help="torch threads for the model: 1 suits small requests on a CPU; raise it "
                                        "for large images."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
):
    """Serve a web page (caption to images, image to caption and neighbours, interpolation, anomalies) and a JSON API (/docs) over a saved model.

    Example: omnivae serve --model runs/demo/model --index runs/demo"""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        fail(ImportError("omnivae serve needs FastAPI and uvicorn: pip install 'omnivae[serve]'"))
    from omnivae.serve import Limits, create_app

    try:
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {port}")
        limits = Limits(max_n=max_n, max_body_bytes=max_body, timeout_s=timeout, max_queue=max_queue)
        if index is not None:
            console.print(f"indexing {index} ...")
        application = create_app(model, index=index, limits=limits, sets=set_, split=split, threads=threads)
    except OmniVAEError as exc:
        fail(exc)
    if host not in LOOPBACK:
        console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can use the model "
                      "(there is no authentication)")
    console.print(f"serving {model} at http://{host}:{port}/ (API: http://{host}:{port}/docs)")
    uvicorn.run(application, host=host, port=port, log_level=log_level)
