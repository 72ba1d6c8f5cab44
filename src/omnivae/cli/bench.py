"""`omnivae bench`: run the benchmark suite of a source checkout (benchmarks/run_all.py).

The benchmarks folder is not installed with the package, so it is looked up from
$OMNIVAE_BENCHMARKS_DIR, next to the package's source tree (src layout), or in the
current directory.

`--quick` results are smoke-test numbers: they go to benchmarks/results/<workload>_quick.json,
table_quick.md and mopoe_vs_m_quick.png, never over the committed full results (the same
naming as bench_quality.py's quality_quick.json). MNIST is looked for where it is documented:
$OMNIVAE_MNIST_DIR, the MNIST loader's cache (omnivae.data.mnist.default_root():
$OMNIVAE_DATA_DIR/mnist, else ~/.cache/omnivae/mnist), then shared/data/mnist next to the
checkout (benchmarks/README.md).
"""
from __future__ import annotations

import os
import runpy
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from omnivae.cli.app import app, console, fail
from omnivae.errors import OmniVAEError

MNIST_FILE = "train-images-idx3-ubyte.gz"


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


def find_mnist(benchmarks: Path) -> Path | None:
    """The first documented MNIST folder holding the training images, or None."""
    from omnivae.data.mnist import default_root

    if os.environ.get("OMNIVAE_MNIST_DIR"):  # set by the user: used as it is, never second-guessed
        chosen = Path(os.environ["OMNIVAE_MNIST_DIR"])
        return chosen if (chosen / MNIST_FILE).is_file() else None
    places = [default_root(), benchmarks.resolve().parents[1] / "shared" / "data" / "mnist"]
    return next((p for p in places if (p / MNIST_FILE).is_file()), None)


def keep_quick_results(scratch: Path, results: Path) -> list[Path]:
    """Move a quick run's files from `scratch` to results/ with a _quick suffix."""
    results.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in sorted(scratch.iterdir()):
        if path.is_file():
            target = results / f"{path.stem}_quick{path.suffix}"
            shutil.move(str(path), target)
            moved.append(target)
    return moved


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="A handful of steps per workload (about a minute); "
                                                      "results go to benchmarks/results/*_quick.json."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this workload (repeatable): "
                                             "mnist-label, polymnist-5, seed-vae, shapes-captions."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: all cores)."),
):
    """Measure training and generation speed, memory and FLOP rate on fixed workloads; writes
    benchmarks/results/*.json, benchmarks/results/table.md and docs/mopoe_vs_m.png (with --quick:
    benchmarks/results/*_quick.json, table_quick.md and mopoe_vs_m_quick.png, so the committed
    results stay). MNIST is read from $OMNIVAE_MNIST_DIR, the MNIST cache ($OMNIVAE_DATA_DIR/mnist
    or ~/.cache/omnivae/mnist) or shared/data/mnist next to the checkout."""
    try:
        script = find_run_all()
    except OmniVAEError as exc:
        fail(exc)
    argv = (["--quick"] if quick else []) + [arg for name in only or [] for arg in ("--only", name)]
    argv += ["--threads", str(threads)] if threads else []
    scratch = Path(tempfile.mkdtemp(prefix="omnivae-bench-quick-")) if quick else None
    if scratch is not None:
        argv += ["--out", str(scratch), "--figure", str(scratch / "mopoe_vs_m.png")]
    mnist = find_mnist(script.parent)
    before = os.environ.get("OMNIVAE_MNIST_DIR")
    if mnist is not None:
        os.environ["OMNIVAE_MNIST_DIR"] = str(mnist)  # the workloads run as child processes: they inherit it
        console.print(f"MNIST: {mnist}")
    else:
        console.print(f"[yellow]MNIST not found[/] ($OMNIVAE_MNIST_DIR, $OMNIVAE_DATA_DIR/mnist, "
                      "~/.cache/omnivae/mnist, shared/data/mnist): the MNIST workloads are recorded as skipped. "
                      "Fetch it with: python -c 'from omnivae.data.mnist import download_mnist; download_mnist()'")
    try:
        main = runpy.run_path(str(script), run_name="omnivae_bench")["main"]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse rejects an unknown workload name
            code = exc.code if isinstance(exc.code, int) else 2
        if scratch is not None:
            moved = keep_quick_results(scratch, script.parent / "results")
            if moved:
                console.print("quick results (the committed full results are unchanged): "
                              + ", ".join(str(p) for p in moved))
    finally:
        if before is None:
            os.environ.pop("OMNIVAE_MNIST_DIR", None)
        else:
            os.environ["OMNIVAE_MNIST_DIR"] = before
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    raise typer.Exit(code=code or 0)
