"""Overfitting: training vs validation loss per epoch, their gap, and one sentence that reads it.

Epochs are counted from 1 here (Lightning's metrics.csv counts from 0)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from omnivae.errors import InputError
from omnivae.report.common import FONT, PathLike, save_figure
from omnivae.report.curves import loss_scale, read_rows

TOLERANCE = 0.01  # validation changes smaller than this share of the loss count as flat


@dataclass
class Term:
    """One loss term's epoch means: epochs (from 1), training and validation values."""

    epochs: np.ndarray
    train: np.ndarray
    val: np.ndarray


@dataclass
class Overfitting:
    terms: dict[str, Term]
    monitor: str  # the term whose validation minimum is the best epoch ("loss" when logged)
    best: int  # index into the epochs of the best validation epoch
    sentence: str
    rows: list[dict] = field(default_factory=list)

    @property
    def best_epoch(self) -> int:
        return int(self.terms[self.monitor].epochs[self.best])

    @property
    def last_epoch(self) -> int:
        return int(self.terms[self.monitor].epochs[-1])


def epoch_terms(metrics_csv: PathLike) -> dict[str, Term]:
    """{term: Term} for every term logged per epoch both as train/<term>_epoch and as val/<term>; on
    epochs logged twice (a resumed run) the later row wins."""
    header, cols = read_rows(metrics_csv)
    if "epoch" not in cols:
        raise InputError(f"{metrics_csv}: no epoch column; columns are {header}")
    train = {h[len("train/"):-len("_epoch")]: h for h in header if h.startswith("train/") and h.endswith("_epoch")}
    val = {h[len("val/"):]: h for h in header if h.startswith("val/") and not h.endswith("_step")}
    names = sorted(set(train) & set(val), key=lambda t: (t != "loss", t))
    out = {}
    for name in names:
        tr, va = _by_epoch(cols["epoch"], cols[train[name]]), _by_epoch(cols["epoch"], cols[val[name]])
        epochs = sorted(set(tr) & set(va))
        if epochs:
            out[name] = Term(np.array(epochs) + 1, np.array([tr[e] for e in epochs]), np.array([va[e] for e in epochs]))
    return out


def _by_epoch(epochs: np.ndarray, values: np.ndarray) -> dict[int, float]:
    keep = np.isfinite(epochs) & np.isfinite(values)
    return {int(e): float(v) for e, v in zip(epochs[keep], values[keep])}


def overfitting(metrics_csv: PathLike) -> Overfitting:
    """Train/validation gaps at the last and the best epoch, per term, and a sentence on the monitored one."""
    terms = epoch_terms(metrics_csv)
    if not terms:
        raise InputError(f"{metrics_csv}: no loss logged for both training (train/<name>_epoch) and "
                         "validation (val/<name>): overfitting cannot be judged without a validation split")
    monitor = next(iter(terms))
    best = int(np.argmin(terms[monitor].val))
    best_epoch = int(terms[monitor].epochs[best])
    rows = []
    for name, t in terms.items():
        moments = [("last", int(t.epochs[-1])), ("best", best_epoch)]
        if best_epoch == moments[0][1]:
            moments = [("last = best", best_epoch)]
        for at, epoch in moments:
            i = np.flatnonzero(t.epochs == epoch)
            if i.size:
                i = int(i[0])
                rows.append({"loss": name, "at": at, "epoch": epoch, "train": float(t.train[i]),
                             "validation": float(t.val[i]), "gap (validation − train)": float(t.val[i] - t.train[i])})
    return Overfitting(terms, monitor, best, sentence(terms[monitor], best, monitor), rows)


def sentence(t: Term, best: int, name: str) -> str:
    """One sentence on what the validation curve of `name` says."""
    if len(t.epochs) < 2:
        return f"Only one epoch has both losses: too short to judge overfitting (gap {t.val[-1] - t.train[-1]:.4g})."
    b, last = int(t.epochs[best]), int(t.epochs[-1])
    gap = t.val[-1] - t.train[-1]
    share = f" ({abs(gap) / abs(t.train[-1]):.1%} of the training {name})" if t.train[-1] != 0 else ""
    side = "above" if gap > 0 else "below"
    tol = TOLERANCE * max(abs(t.val[best]), 1e-12)
    if b == last:
        return (f"Validation {name} was still falling at the last epoch ({t.val[0]:.4g} at epoch {int(t.epochs[0])} "
                f"→ {t.val[-1]:.4g} at epoch {last}), {abs(gap):.4g}{share} {side} the training {name}: no sign "
                "of overfitting yet, and training longer may still help.")
    best_gap = t.val[best] - t.train[best]
    if t.val[-1] - t.val[best] <= tol and gap - best_gap > tol:
        return (f"Validation {name} has been flat since epoch {b} (within {TOLERANCE:.0%}) while training {name} "
                f"kept falling ({t.train[best]:.4g} → {t.train[-1]:.4g}), so the gap grew from {best_gap:.4g} to "
                f"{gap:.4g}: the model starts to overfit, and stopping at epoch {b} (train.patience) would lose "
                "nothing.")
    if t.val[-1] - t.val[best] <= tol:
        return (f"Validation {name} has been flat since epoch {b} (within {TOLERANCE:.0%}; best {t.val[best]:.4g}, "
                f"last {t.val[-1]:.4g}): little to gain from more epochs of this setting; at the last epoch it is "
                f"{abs(gap):.4g}{share} {side} the training {name}.")
    if t.train[-1] < t.train[best]:
        return (f"Validation {name} rises after epoch {b} ({t.val[best]:.4g} → {t.val[-1]:.4g} at epoch {last}) "
                f"while training {name} keeps falling ({t.train[best]:.4g} → {t.train[-1]:.4g}): the model overfits "
                f"after epoch {b}, so early stopping at epoch {b} would help (train.patience; a run keeps the "
                "lowest-validation checkpoint as its model).")
    return (f"Validation and training {name} both rise after epoch {b} (validation {t.val[best]:.4g} → "
            f"{t.val[-1]:.4g}): training became unstable rather than overfitting; a lower learning rate may help.")


def overfitting_figure(result: Overfitting) -> Figure:
    """One panel per term: training and validation epoch means, best validation epoch marked."""
    n = len(result.terms)
    ncol = min(3, n)
    fig = Figure(figsize=(4.2 * ncol, 3.2 * math.ceil(n / ncol)), layout="constrained")
    axes = fig.subplots(math.ceil(n / ncol), ncol, squeeze=False).ravel()
    marker = "o" if len(result.terms[result.monitor].epochs) < 30 else None
    for ax, (name, t) in zip(axes, result.terms.items()):
        ax.plot(t.epochs, t.train, marker=marker, markersize=3, label=f"train {name}")
        ax.plot(t.epochs, t.val, marker=marker, markersize=3, label=f"validation {name}")
        ax.axvline(result.best_epoch, color="#888", ls="--", lw=1,
                   label=f"best validation {result.monitor} (epoch {result.best_epoch})")
        ax.set_ylabel(loss_scale(ax, np.r_[t.train, t.val], name), fontsize=FONT + 1)
        ax.set_xlabel("epoch (from 1)")
        ax.set_title(f"{name}: train vs validation", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=FONT)
    for ax in axes[n:]:
        ax.axis("off")
    return fig


def overfitting_curves(result: Overfitting, path: PathLike) -> Path:
    """overfitting_figure written as a PNG file."""
    return save_figure(overfitting_figure(result), path, tight=False)
