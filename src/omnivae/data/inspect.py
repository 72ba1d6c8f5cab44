"""What a data set holds, before training on it: per modality its kind, shape or vocabulary,
how many examples have it and how many miss it. Backs `omnivae data inspect PATH`."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from omnivae.data.folder import METADATA_NAMES
from omnivae.data.raw import RawData, kind_class, label_kind
from omnivae.errors import InputError


def describe(raw: RawData) -> dict[str, Any]:
    """A JSON-ready summary: examples, complete examples, per-modality stats, targets.

    Each modality's statistics come from its kind's class (`summarize`): text vocabulary
    counts distinct lower-cased words (runs of letters, digits, _ and '), caption lengths are
    in such words; labels are counted per class; other kinds give shape and dtype.
    """
    n = len(raw)
    present_all = np.ones(n, dtype=bool)
    classes = raw.info.get("classes", {})
    mods = {}
    for name, values in raw.modalities.items():
        kind, present = raw.kinds[name], raw.mask[name]
        present_all &= present
        count = int(present.sum())
        entry: dict[str, Any] = {"kind": kind, "present": count, "missing": n - count,
                                 "missing_fraction": (n - count) / n if n else 0.0}
        entry.update(kind_class(kind).summarize(values, present, classes.get(name)))
        mods[name] = entry
    labels = kind_class(label_kind())  # targets are labels, summarised as a label kind's values
    targets = {name: labels.summarize(np.asarray(t), np.asarray(t) >= 0, classes.get(name))
               for name, t in raw.targets.items()}
    return {"examples": n, "complete": int(present_all.sum()), "source": raw.info.get("source"),
            "modalities": mods, "targets": targets}


def _details(entry: dict[str, Any]) -> str:
    return kind_class(entry["kind"]).summary_line(entry)


def print_description(raw: RawData, console=None) -> dict[str, Any]:
    """Print `describe(raw)` as a rich table; returns the description."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    d = describe(raw)
    table = Table(title=f"{d['examples']} examples ({d['complete']} with every modality)"
                        + (f", source {d['source']}" if d["source"] else ""))
    for column, justify in (("modality", "left"), ("kind", "left"), ("details", "left"),
                            ("present", "right"), ("missing", "right")):
        table.add_column(column, justify=justify)
    for name, e in d["modalities"].items():
        table.add_row(name, e["kind"], _details(e), str(e["present"]),
                      f"{e['missing']} ({100 * e['missing_fraction']:.1f}%)")
    console.print(table)
    if d["targets"]:
        console.print("targets: " + "; ".join(f"{k} ({v['num_classes']} class{'es' if v['num_classes'] != 1 else ''})"
                                              for k, v in d["targets"].items()))
    return d


def guess_source(path: Path) -> str:
    """"folder" for a folder with metadata.jsonl/csv, "coco" for one with a COCO captions_*.json
    (in it or in its annotations/), "arrays" for .npz/.parquet/.npy data."""
    from omnivae.data.coco import find_annotations

    path = Path(path)
    if path.is_dir() and any((path / n).is_file() for n in METADATA_NAMES):
        return "folder"
    if path.is_dir() and find_annotations(path):
        return "coco"
    if path.suffix in (".npz", ".parquet", ".npy") or (path.is_dir() and any(path.glob("*.npy"))):
        return "arrays"
    if not path.exists():
        raise InputError(f"{path} does not exist")
    raise InputError(f"cannot tell what {path} holds: expected a folder of images with "
                     f"{' or '.join(METADATA_NAMES)} or a COCO captions_*.json, an .npz or .parquet file, "
                     "or a folder of .npy files")


def load_for_inspect(path: Path | None, source: str | None = None, options: dict | None = None) -> RawData:
    """Load `path` with the source its layout implies, or the named source (shapes, mnist, ...)."""
    from omnivae.data.sources import DataConfig, load_source

    options = dict(options or {})
    if source is None:
        if path is None:
            raise InputError("give a data path or --source (e.g. shapes)")
        source = guess_source(path)
    if path is not None:
        key = {"folder": "path", "coco": "path", "arrays": "path", "mnist": "root", "polymnist": "root"}.get(source)
        if key is None:
            raise InputError(f"data source {source!r} takes no path; use --set key=value for its options")
        options[key] = str(path)
    return load_source(DataConfig(source=source, options=options))


def inspect_command(path: Path | None, source: str | None = None, options: dict | None = None,
                    console=None) -> dict[str, Any]:
    """`omnivae data inspect`: load the data, print its warnings and description, return it."""
    from rich.console import Console
    from rich.markup import escape

    from omnivae.data.folder import DataWarning

    console = console or Console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        raw = load_for_inspect(path, source, options)
    for w in caught:
        if issubclass(w.category, DataWarning):
            console.print(f"[yellow]warning:[/] {escape(str(w.message))}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return print_description(raw, console)
