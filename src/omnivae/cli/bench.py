"""`omnivae bench`: run the benchmark suite of a source checkout (benchmarks/run_all.py).

The benchmarks folder is not installed with the package, so it is looked up from
$OMNIVAE_BENCHMARKS_DIR, next to the package's source tree (src layout), or in the
current directory.
"""
from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import List, Optional

import typer

from omnivae.cli.app import app, fail
from omnivae.errors import OmniVAEError


def find_run_all() -> Path:
    """benchmarks/run_all.py of a source checkout, or an error saying where it was looked for."""
    candidates = []
    if os.environ.get("OMNIVAE_BENCHMARKS_DIR"):
        candidates.append(Path(os.environ["OMNIVAE_BENCHMARKS_DIR"]))
    candidates += [Path(__file__).resolve().parents[3] / "benchmarks", Path.cwd() / "benchmarks"]
    for folder in candidates:
        if (folder / "run_all.py").is_file():
            return folder / "run_all.py"
    raise OmniVAEError("benchmarks/run_all.py not found (looked in " + ", ".join(map(str, candidates))
                       + "). The benchmarks ship with the source repository, not the installed package: "
                       "run this from a checkout, or set OMNIVAE_BENCHMARKS_DIR to its benchmarks folder.")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="A handful of steps per workload (about a minute)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this workload (repeatable): "
                                             "mnist-label, polymnist-5, seed-vae, shapes-captions."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: all cores)."),
):
    """Measure training and generation speed, memory and FLOP rate on fixed workloads; writes
    benchmarks/results/*.json, benchmarks/results/table.md and docs/mopoe_vs_m.png."""
    try:
        script = find_run_all()
    except OmniVAEError as exc:
        fail(exc)
    argv = (["--quick"] if quick else []) + [arg for name in only or [] for arg in ("--only", name)]
    argv += ["--threads", str(threads)] if threads else []
    main = runpy.run_path(str(script), run_name="omnivae_bench")["main"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects an unknown workload name
        code = exc.code if isinstance(exc.code, int) else 2
    raise typer.Exit(code=code or 0)
