"""Verbs over a trained model: evaluate, embed, retrieve, detect, impute.

Data come from a run folder (`--run RUN_DIR`: its run.yaml is re-read and the same
splits rebuilt, so the test split is the one held out in training) or from `--data`:
a built-in source name (options via `--set data.options.n=500`), a .npz file or a
data folder.
"""
from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from omnivae.cli.app import app, console, fail
from omnivae.cli.outputs import out_file, out_folder, removed_on_failure, run_inputs
from omnivae.errors import ConfigError, InputError, OmniVAEError

SPLITS = ("auto", "train", "val", "test", "all")
RUN_HELP = "Run folder: its model and run.yaml (data config; the same splits are rebuilt)."
DATA_HELP = "Data: a built-in source name (e.g. shapes), a .npz file or a data folder."
SET_HELP = "Override a data option, e.g. --set data.options.n=500 (with a source name)."
SPLIT_HELP = ("Which part of the data to use: auto (the test split for a run or a source; "
              "everything for a file or folder), train, val, test or all.")


class LoadedData:
    """The model and the data parts a verb works on."""

    def __init__(self, model, parts: dict, default: str):
        self.model, self.parts, self.default = model, parts, default

    def get(self, split: str):
        name = self.default if split == "auto" else split
        if name not in self.parts:
            raise InputError(f"split {name!r} is not available here; choose one of {sorted(self.parts)}")
        if len(self.parts[name]) == 0:
            raise InputError(f"split {name!r} is empty")
        return self.parts[name]


def load_model_and_data(model_dir: Optional[Path], run_dir: Optional[Path], data: Optional[str],
                        sets: list[str], need_data: bool = True) -> LoadedData:
    from omnivae.cli.run import apply_overrides
    from omnivae.data.sources import DataConfig, load_source
    from omnivae.io import load_model
    from omnivae.run import RunConfig, split_data
    from omnivae.run_folder import RunFolder

    folder = RunFolder(run_dir) if run_dir is not None else None
    if model_dir is None:
        if folder is None:
            raise ConfigError("give --model DIR (a saved model folder) or --run RUN_DIR")
        model_dir = folder.model
    model = load_model(model_dir)
    if folder is not None and data is None:
        config = RunConfig.from_dict(apply_overrides(folder.read_config(), sets), str(folder.config_file))
        splits = split_data(load_source(config.data), config)
        return LoadedData(model, _parts(splits), "test")
    if data is None:
        if need_data:
            raise ConfigError("give --run RUN_DIR or --data SOURCE_OR_PATH for the data")
        return LoadedData(model, {}, "all")
    path = Path(data)
    if path.exists():
        if path.suffix.lower() == ".npz":
            from omnivae.tasks.impute import load_npz

            raw = load_npz(path)
        else:
            source = "arrays" if path.suffix.lower() == ".parquet" else "folder"
            raw = load_source(DataConfig(source=source, options={"path": str(path)}))
        return LoadedData(model, {"all": raw}, "all")
    cfg = apply_overrides({"data": {"source": data}}, sets)
    config = RunConfig.from_dict({"data": cfg["data"]}, "--data/--set")
    splits = split_data(load_source(config.data), config)
    return LoadedData(model, _parts(splits), "test")


def _parts(splits) -> dict:
    from omnivae.data.raw import RawData

    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    parts["all"] = RawData.concat(list(parts.values()))
    return parts


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"--split must be one of {SPLITS}, got {split!r}")


@app.command()
def evaluate(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: RUN_DIR/model)."),
    run: Optional[Path] = typer.Option(None, "--run", help=RUN_HELP),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, figures/ and report.html."),
    split: str = typer.Option("auto", help=SPLIT_HELP),
    n_eval: int = typer.Option(1000, min=1, help="At most this many test examples per metric."),
    scorer_epochs: int = typer.Option(3, help="Epochs of the evaluation classifiers."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Random seed."),
):
    """Evaluate a trained model: cross-modal coherence, latent probes, retrieval, anomaly detection, likelihood and Fréchet distance, with figures. Writes OUT/metrics.json and a self-contained OUT/report.html. Evaluation classifiers are trained on the training split (on the evaluated data itself when it is a single file or folder).

    Example: omnivae evaluate --run runs/demo --out runs/demo/eval"""
    from omnivae.cli.run import show_summary
    from omnivae.tasks.evaluate import evaluate_model

    try:
        _check_split(split)
        out_folder(out, "metrics.json", "evaluate")
        loaded = load_model_and_data(model, run, data, set_)
        test = loaded.get(split)
        train = loaded.parts.get("train", test) if split in ("auto", "test") else test
        if len(train) == 0:
            train = test
        with step_progress("evaluating") as progress, removed_on_failure(out):
            metrics = evaluate_model(loaded.model, train, test, out, run_dir=run, n_eval=n_eval,
                                     scorer_epochs=scorer_epochs, seed=seed, progress=progress)
    except OmniVAEError as exc:
        fail(exc)
    show_summary(metrics)
    for key in metrics.get("skipped", {}):
        console.print(f"[yellow]skipped[/] {key}: {metrics['skipped'][key]}")
    console.print(f"[green]wrote[/] {out}/metrics.json and {out}/report.html")


@app.command()
def embed(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: RUN_DIR/model)."),
    run: Optional[Path] = typer.Option(None, "--run", help=RUN_HELP),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    given: Optional[list[str]] = typer.Option(None, "--given", help="Modalities to encode from (repeatable; default: all)."),
    out: Path = typer.Option(..., "--out", help="Output file, by its suffix: .npz (recommended: arrays embeddings "
                                                "[N, D], index, id, target__<name>), .csv or .parquet (one row "
                                                "per example: index, id, target__<name>, z_0 ... z_{D-1}), or .npy "
                                                "(the [N, D] matrix alone, rows in data order)."),
    split: str = typer.Option("auto", help=SPLIT_HELP),
    batch_size: int = typer.Option(1024, help="Examples per forward pass."),
    progress: bool = typer.Option(True, help="Show a progress bar (on stderr)."),
):
    """Write latent means (the joint posterior of the --given modalities) for every example, with what joins them back to the data.

    index is each example's row in the data as its source read it (the metadata row for a data
    folder; for a run's split, the row before splitting), id the data's id column when it has
    one (a data folder's file names), target__<name> its labels (in .csv/.parquet the class
    name when known; empty or -1 when missing).

    Example: omnivae embed --run runs/demo --given text --out z.npz"""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from omnivae.tasks.embed import embed as embed_data
    from omnivae.tasks.embed import join_columns, save_embeddings

    try:
        _check_split(split)
        out_file(out, run_inputs(model, run, data))
        loaded = load_model_and_data(model, run, data, set_)
        raw = loaded.get(split)
        err = Console(stderr=True)  # the bar only where a person watches: a terminal
        bar = Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=err, transient=True, disable=not progress or not err.is_terminal)
        with bar:
            task = bar.add_task("embedding", total=len(raw))
            z = embed_data(loaded.model, raw, given=given or None, batch_size=batch_size,
                           progress=lambda done, total: bar.update(task, completed=done))
        save_embeddings(z, out, **join_columns(raw))
    except ImportError as exc:
        fail(exc)
    except OmniVAEError as exc:
        fail(exc)
    console.print(f"[green]wrote[/] {out}: {z.shape[0]} embeddings of size {z.shape[1]}")


@contextmanager
def step_progress(what: str):
    """A progress bar on stderr over named steps: yields progress(step, total), called as each starts."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(f"{what}: {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    task = None

    def progress(step: str, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(step, total=total)
        else:
            bar.advance(task)
            bar.update(task, description=step)

    with bar:
        yield progress


def describe(raw, i: int, skip: str) -> str:
    """A short text for example i: the preview captions of its other modalities and its targets."""
    from omnivae.modalities import MODALITY_KINDS

    parts = [MODALITY_KINDS[k].preview(raw.modalities[n][i]).get("caption") for n, k in raw.kinds.items()
             if n != skip and raw.mask[n][i]]
    parts = [p for p in parts if p]
    classes = raw.info.get("classes", {})
    for t, v in raw.targets.items():
        names = classes.get(t)
        if names is not None and len(names) > 1:
            parts.append(f"{t}={names[int(v[i])]}")
    return "; ".join(parts)


@app.command()
def retrieve(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: RUN_DIR/model)."),
    run: Optional[Path] = typer.Option(None, "--run", help=RUN_HELP),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    query: str = typer.Option(..., "--query", help="Modality of the query values, e.g. text."),
    value: list[str] = typer.Argument(..., help="Query value(s): captions, labels, image files or .npy arrays."),
    gallery: str = typer.Option(..., "--gallery", help="Modality to search, e.g. image."),
    k: int = typer.Option(5, "-k", "--top-k", help="Results per query."),
    score: str = typer.Option("latent", help="latent (cosine of latent means) or likelihood "
                                             "(re-rank the latent top candidates by log p(item | query))."),
    split: str = typer.Option("auto", help=SPLIT_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for results.json (and retrieval.png)."),
):
    """Search the gallery modality of the data (by default the run's test split) with queries of another modality, and print the top-K items.

    Example: omnivae retrieve --run runs/demo --query text "a red circle" --gallery image -k 5"""
    from omnivae.tasks.generate import parse_inputs
    from omnivae.tasks.retrieve import RetrievalIndex

    try:
        _check_split(split)
        loaded = load_model_and_data(model, run, data, set_)
        m = loaded.model
        m.check_names([query], "--query")
        m.check_names([gallery], "--gallery")
        if out is not None:
            out_folder(out, "results.json", "retrieve")
        raw = loaded.get(split)
        index = RetrievalIndex(m, raw, gallery)
        result = index.query({query: parse_inputs(m, query, value)}, given=[query], k=k, score=score)
    except OmniVAEError as exc:
        fail(exc)
    from omnivae.modalities import MODALITY_KINDS

    shown = MODALITY_KINDS[raw.kinds[gallery]]
    rows = []
    for q, text in enumerate(value):
        table = Table(title=f"{query}: {text}")
        for col in ("rank", "index", "score", "item"):
            table.add_column(col)
        for r, (i, s) in enumerate(zip(result.indices[q], result.scores[q])):
            item = shown.describe(raw.modalities[gallery][i]) or describe(raw, int(i), gallery)
            table.add_row(str(r + 1), str(int(i)), f"{float(s):.4g}", item)
            rows.append({"query": text, "rank": r + 1, "index": int(i), "score": float(s), "item": item})
        console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        from omnivae.atomic import write_text

        write_text(out / "results.json", json.dumps({"query_modality": query, "gallery_modality": gallery,
                                                     "score": score, "results": rows}, indent=2))
        figure = retrieval_figure(m, query, parse_inputs(m, query, value), raw, gallery, result, out)
        if figure is not None:
            console.print(f"[green]wrote[/] {figure}")
        console.print(f"[green]wrote[/] {out}/results.json")


def retrieval_figure(model, query: str, values, raw, gallery: str, result, out: Path) -> Path | None:
    """OUT/retrieval.png: each query, then its top results, as their kinds draw them; None when
    either kind cannot be drawn (the results are in results.json)."""
    from omnivae.report.figures import retrieval_examples

    queries = model.modalities[query].drawn(model.modalities[query].accept(values))
    found = raw.subset(result.indices.reshape(-1)).modalities[gallery]
    items = model.modalities[gallery].drawn(model.modalities[gallery].prepare(found))
    if queries is None or items is None:
        return None
    k = result.indices.shape[1]
    rows = items.reshape(len(result.indices), k, *items.shape[1:]) if hasattr(items, "reshape") else \
        [items[q * k:(q + 1) * k] for q in range(len(result.indices))]  # pictures [Q,k,C,H,W] or Q lists of texts
    return retrieval_examples(queries, rows, result.scores, out / "retrieval.png")


@app.command()
def detect(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: RUN_DIR/model)."),
    run: Optional[Path] = typer.Option(None, "--run", help=RUN_HELP),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path = typer.Option(..., "--out", help="CSV file: one row per example with every score and the label."),
    score: str = typer.Option("neg_elbo", help="Score the threshold applies to: neg_elbo, nll_<m>, "
                                               "cross_nll_<m> or disagreement."),
    contamination: Optional[float] = typer.Option(None, help="Flag this fraction of the scored data "
                                                             "(default 0.05 when --fpr is not given)."),
    fpr: Optional[float] = typer.Option(None, help="Instead: set the threshold so this fraction of the run's "
                                                   "validation split (taken as normal) is flagged."),
    split: str = typer.Option("auto", help=SPLIT_HELP),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Random seed of the ELBO's posterior draws."),
):
    """Score every example for anomalies (negative ELBO, reconstruction and cross-modal errors, disagreement between modalities) and flag those above a threshold.

    Example: omnivae detect --run runs/demo --out scores.csv --contamination 0.05"""
    from omnivae.tasks.detect import AnomalyDetector

    try:
        _check_split(split)
        if contamination is not None and fpr is not None:
            raise InputError("give --contamination or --fpr, not both")
        out_file(out, run_inputs(model, run, data))
        loaded = load_model_and_data(model, run, data, set_)
        target = loaded.get(split)
        detector = AnomalyDetector(loaded.model, score_name=score, seed=seed)
        scores = detector.score(target)
        if fpr is not None:
            if len(loaded.parts.get("val", ())) == 0:
                raise InputError("--fpr needs a validation split: use --run RUN_DIR or a source name with --data")
            detector.fit(loaded.parts["val"], fpr=fpr)
        else:
            detector.fit_scores(scores, contamination=0.05 if contamination is None else contamination)
        labels = detector.predict(scores=scores)
    except OmniVAEError as exc:
        fail(exc)
    from omnivae.atomic import replacing

    names = list(scores)
    with replacing(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", *names, "is_anomaly"])
        for i in range(len(labels)):
            writer.writerow([i, *(f"{scores[n][i]:.6g}" for n in names), int(labels[i])])
    console.print(f"threshold on {score}: {detector.threshold:.6g}; flagged {int(labels.sum())} of {len(labels)}")
    console.print(f"[green]wrote[/] {out}")


@app.command()
def impute(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder."),
    data: Path = typer.Option(..., "--data", help=".npz file with one array per modality and mask__<name> arrays "
                                                  "(False = missing; text may use \"\" for missing), read as "
                                                  "`train --data` reads it."),
    out: Path = typer.Option(..., "--out", help="Completed .npz: missing entries generated, masks all True, "
                                                "imputed__<name> arrays mark what was filled; targets, kinds and "
                                                "class names kept, so `omnivae train --data OUT` reads it."),
    sample: bool = typer.Option(False, help="Draw from the posterior instead of decoding its mean."),
    force: bool = typer.Option(False, "--force", help="Allow --out to be the --data file itself (it is replaced)."),
):
    """Fill in missing modalities from the present ones; present entries are kept as they are.
    The output is written atomically; it may only replace the input file with --force.

    Example: omnivae impute --model runs/demo/model --data partial.npz --out completed.npz"""
    from omnivae.data.arrays import load_arrays
    from omnivae.io import load_model
    from omnivae.tasks.impute import impute as impute_data
    from omnivae.tasks.impute import save

    try:
        if data.suffix.lower() != ".npz":
            raise InputError(f"--data must be a .npz file, got {data}")
        if out.suffix.lower() != ".npz":
            raise InputError(f"--out must end in .npz, got {out}")
        out_file(out, [data, model], force=force)
        m = load_model(model)
        raw = load_arrays(data)
        completed = impute_data(m, raw, mean=not sample)
        save(completed, out)
    except OmniVAEError as exc:
        fail(exc)
    except OSError as exc:  # the write failed: the old file (if any) is untouched
        fail(OmniVAEError(f"cannot write {out}: {exc} (nothing was changed there)"))
    counts = {n: int(f.sum()) for n, f in completed.info["imputed"].items()}
    console.print(f"imputed {counts}; [green]wrote[/] {out}")
