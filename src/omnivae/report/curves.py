"""Curves: the CSV metrics of a run, loss curves on a log scale, and line plots of named series."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, SymmetricalLogLocator

from omnivae.errors import InputError
from omnivae.report.common import FONT, PathLike, as_array, save_figure


def _float(text: str | None) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def read_rows(metrics_csv: PathLike) -> tuple[list[str], dict[str, np.ndarray]]:
    """A CSV file's header and its columns as float arrays (NaN where a cell is empty or not a number)."""
    src = Path(metrics_csv)
    if not src.is_file():
        raise InputError(f"metrics file not found: {src}")
    with src.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    return header, {h: np.array([_float(r.get(h)) for r in rows], dtype=float) for h in header}


def read_metrics(metrics_csv: PathLike, keys: Sequence[str] | None = None) -> tuple[str, dict[str, tuple]]:
    """Read a Lightning CSVLogger metrics.csv: (x-axis name, {column: (x, y)}) with NaN rows dropped per column."""
    src = Path(metrics_csv)
    header, cols = read_rows(src)
    n = len(next(iter(cols.values()))) if cols else 0
    x_name = next((k for k in ("step", "epoch") if k in cols and np.isfinite(cols[k]).any()), "row")
    x = cols[x_name] if x_name != "row" else np.arange(n, dtype=float)
    if keys is None:
        chosen = [h for h in header if "loss" in h.lower() and h not in ("step", "epoch")]
    else:
        chosen = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in chosen if k not in cols]
        if missing:
            raise InputError(f"{src}: no column(s) {missing}; columns are {header}")
    series = {}
    for key in chosen:
        keep = np.isfinite(cols[key]) & np.isfinite(x)
        if keep.any():
            series[key] = (x[keep], cols[key][keep])
    if not series:
        wanted = "names containing 'loss'" if keys is None else f"{chosen}"
        raise InputError(f"{src}: no numeric columns to plot (looked for {wanted}); columns are {header}")
    return x_name, series


def _plain(value: float, _pos=None) -> str:
    return f"{value:g}"


def loss_scale(ax, values: Any, name: str) -> str:
    """Put ax's y axis on a log scale when every value is positive, else on a symmetric log scale
    (linear near zero), with plain-number ticks; return the axis title, which says which scale."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    size = np.abs(v[v != 0])
    if not size.size:
        ax.set_yscale("linear")
        return f"{name} (linear: all values are 0)"
    if (v > 0).all():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        narrow = np.log10(size.max() / size.min()) < 1.5  # then the in-between ticks are labelled too
        ax.yaxis.set_minor_formatter(FuncFormatter(_plain) if narrow else NullFormatter())
        return f"{name} (log scale)"
    # all negative: log of the size; mixed signs: linear only close to zero
    threshold = float(0.1 * size.min() if (v < 0).all() else max(size.min(), 1e-3 * size.max()))
    ax.set_yscale("symlog", linthresh=threshold)
    decades = np.log10(size.max() / max(threshold, size.min()))
    if decades < 1:  # within a decade the log part looks linear: evenly spaced round numbers read best
        ax.yaxis.set_major_locator(MaxNLocator(6))
    else:
        subs = (1, 2, 5) if decades <= 2 else (1,)
        ax.yaxis.set_major_locator(SymmetricalLogLocator(linthresh=threshold, base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    return f"{name} (symlog scale, linear within ±{float(f'{threshold:.2g}'):g})"


def loss_group(key: str) -> str:
    """The loss a column belongs to: 'train/loss_epoch', 'train/loss_step' and 'val/loss' -> 'loss'."""
    return re.sub(r"_(step|epoch)$", "", re.sub(r"^(train|val|valid|validation|test)[/_]", "", key))


def curves_figure(metrics_csv: PathLike, keys: Sequence[str] | None = None) -> Figure:
    """Every loss column (or `keys`) of a CSVLogger metrics.csv; train/val variants share a panel whose
    y axis is logarithmic (symlog when a value is zero or negative)."""
    x_name, series = read_metrics(metrics_csv, keys)
    groups: dict[str, list[str]] = {}
    for key in series:
        groups.setdefault(loss_group(key), []).append(key)
    ncol = min(3, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, (base, keys_in_group) in zip(axes, groups.items()):
        for key in keys_in_group:
            xs, ys = series[key]
            step = key.endswith("_step")
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key,
                    lw=0.8 if step else 1.6, alpha=0.6 if step else 1.0)
        ax.set_ylabel(loss_scale(ax, np.concatenate([series[k][1] for k in keys_in_group]), base), fontsize=FONT + 1)
        ax.set_title(base, fontsize=9)
        ax.set_xlabel(x_name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=FONT)
    for ax in axes[len(groups):]:
        ax.axis("off")
    return fig


def training_curves(metrics_csv: PathLike, path: PathLike, keys: Sequence[str] | None = None) -> Path:
    """curves_figure written as a PNG file."""
    return save_figure(curves_figure(metrics_csv, keys), path, tight=False)


def scalar_curve(xs: Any, ys_dict: Mapping[str, Any], path: PathLike, xlabel: str = "", ylabel: str = "",
                 title: str | None = None, logx: bool = False, logy: bool = False) -> Path:
    """Line plot of several named series over shared xs (e.g. step time vs number of modalities); NaN = missing."""
    x = as_array(xs, "xs").astype(float)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise InputError(f"xs: expected a finite 1-D array, got shape {tuple(x.shape)}")
    if not isinstance(ys_dict, Mapping) or not ys_dict:
        raise InputError("ys_dict: expected a non-empty mapping {series name: values}")
    if logx and (x <= 0).any():
        raise InputError("xs: log-scale x needs positive values")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for label, values in ys_dict.items():
        y = as_array(values, f"ys_dict[{label!r}]").astype(float)
        if y.shape != x.shape:
            raise InputError(f"ys_dict[{label!r}]: expected shape {x.shape} like xs, got {tuple(y.shape)}")
        keep = np.isfinite(y)
        if logy and (y[keep] <= 0).any():
            raise InputError(f"ys_dict[{label!r}]: log-scale y needs positive values")
        ax.plot(x[keep], y[keep], marker="o", markersize=4, label=str(label))
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=FONT + 1)
    return save_figure(fig, path, tight=False)
