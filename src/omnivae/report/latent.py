"""The latent map: codes projected to 2-D, coloured by class, or a density when there are no labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from omnivae.errors import InputError
from omnivae.report.common import FONT, PathLike, as_array, save_figure

MAX_CLASSES = 20  # more classes than this get a colour scale instead of a legend


def _label_names(classes: np.ndarray, label_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    """Map each integer label to its display name (the number itself when no names are given)."""
    try:
        return {int(u): str(u) if label_names is None else str(label_names[int(u)]) for u in classes}
    except (KeyError, IndexError):
        raise InputError(f"label_names has no entry for some of the labels {classes.tolist()}") from None


def _labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    lab = as_array(labels, "labels")
    if lab.shape != (n,) or (np.issubdtype(lab.dtype, np.floating) and not np.all(lab == np.round(lab))):
        raise InputError(f"labels: expected integer labels of shape ({n},), got {lab.dtype} {tuple(lab.shape)}")
    return lab.astype(int)


def project(a: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, tuple[str, str], str]:
    """2-D coordinates of codes a [N, D], the axis titles and the projection's name."""
    if a.shape[1] == 1:
        jitter = np.random.default_rng(seed).uniform(-0.5, 0.5, len(a))
        return np.c_[a[:, 0], jitter], ("z[0] (the only latent dimension)", "random jitter"), "D=1"
    if a.shape[1] == 2:
        return a, ("z[0] (latent dimension 1)", "z[1] (latent dimension 2)"), "D=2, no projection"
    if method == "pca":
        from sklearn.decomposition import PCA

        with np.errstate(divide="ignore", invalid="ignore"):  # constant codes have zero variance
            pca = PCA(n_components=2, random_state=seed).fit(a)
        ratios = np.nan_to_num(pca.explained_variance_ratio_)
        names = tuple(f"PCA component {i + 1} ({v:.0%} of the variance)" for i, v in enumerate(ratios))
        return pca.transform(a), names, f"PCA of {a.shape[1]} dims"
    if len(a) < 5:
        raise InputError(f"t-SNE needs at least 5 points, got {len(a)}")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (len(a) - 1) / 3))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(a)
    return xy, ("t-SNE dimension 1", "t-SNE dimension 2"), f"t-SNE of {a.shape[1]} dims"


def _marker(n: int) -> tuple[float, float]:
    """Marker area and alpha: small, see-through dots when there are many."""
    if n <= 300:
        return 16.0, 0.8
    if n <= 1500:
        return 7.0, 0.55
    return 3.0, 0.4


def stacked(xy: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """When most points sit on top of others (identical inputs give identical codes): one point per
    place and label with its count, and the number of distinct places; None otherwise."""
    span = np.ptp(xy, axis=0)
    span[span == 0] = 1.0
    keys = np.round((xy - xy.min(0)) / span * 1000).astype(np.int64)  # same place: within 0.1% of the range
    places = len(np.unique(keys, axis=0))
    if places > len(xy) // 2:
        return None
    groups, inverse, counts = np.unique(np.c_[keys, lab], axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    centres = np.array([xy[inverse == i].mean(0) for i in range(len(groups))])
    order = np.argsort(-counts, kind="stable")  # big markers first, small ones stay visible on top
    return centres[order], groups[order, 2], counts[order], places


def latent_figure(z: Any, labels: Any = None, label_names: Sequence[str] | Mapping[int, str] | None = None,
                  method: str = "pca", max_points: int = 3000, seed: int = 0, label_title: str = "label") -> Figure:
    """Codes z [N, D] in 2-D (PCA, or t-SNE) on a random subset of at most max_points: dots coloured by
    label with a legend, or a hexbin density when labels is None."""
    a = as_array(z, "z").astype(float)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise InputError(f"z: expected shape [N, D] with N >= 2, got {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise InputError("z: contains NaN or infinite values")
    if method not in ("pca", "tsne"):
        raise InputError(f"method: expected 'pca' or 'tsne', got {method!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 2:
        raise InputError(f"max_points: expected an integer >= 2, got {max_points!r}")
    lab = _labels(labels, len(a))
    names = _label_names(np.unique(lab), label_names) if lab is not None else {}
    rng = np.random.default_rng(seed)
    total = len(a)
    order = rng.permutation(total)[:max_points]  # shuffled: no class is drawn on top of all others
    a = a[order]
    lab = lab[order] if lab is not None else None
    xy, axis_names, projection = project(a, method, seed)

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    size, alpha = _marker(len(xy))
    note = ""
    if lab is None:
        grid = int(np.clip(np.sqrt(len(xy)) / 1.5, 8, 50))
        cells = ax.hexbin(xy[:, 0], xy[:, 1], gridsize=grid, mincnt=1, cmap="viridis", linewidths=0.1)
        fig.colorbar(cells, ax=ax, label="codes per hexagon")
        what = "density (no labels)"
    elif len(names) <= MAX_CLASSES:
        classes = sorted(names)
        palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        colour = {u: palette(i) for i, u in enumerate(classes)}
        piles = stacked(xy, lab)
        if piles is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, c=[colour[u] for u in lab], alpha=alpha, linewidths=0)
        else:
            centres, group_labels, group_counts, places = piles
            ax.scatter(centres[:, 0], centres[:, 1], s=15 + 285 * group_counts / group_counts.max(),
                       c=[colour[u] for u in group_labels], alpha=0.75, edgecolors="white", linewidths=0.6)
            note = f"\n{len(xy)} codes at only {places} distinct places: marker area ∝ number of examples"
        counts = {u: int((lab == u).sum()) for u in classes}
        handles = [Line2D([], [], ls="", marker="o", markersize=6, color=colour[u], label=f"{names[u]} ({counts[u]})")
                   for u in classes]
        ax.legend(handles=handles, title=label_title, fontsize=FONT + 1, title_fontsize=FONT + 2,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
        what = f"coloured by {label_title}"
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=lab, cmap="viridis", alpha=alpha, linewidths=0)
        fig.colorbar(points, ax=ax, label=label_title)
        what = f"coloured by {label_title}"
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.grid(alpha=0.2)
    shown = f"{len(xy)} points" if len(xy) == total else f"{len(xy)} random points of {total}"
    ax.set_title(f"latent space: {projection}, {shown}, {what}{note}", fontsize=FONT + 3)
    return fig


def latent_map(z: Any, labels: Any, path: PathLike, label_names: Sequence[str] | Mapping[int, str] | None = None,
               method: str = "pca", max_points: int = 3000, seed: int = 0, label_title: str = "label") -> Path:
    """latent_figure written as a PNG file."""
    return save_figure(latent_figure(z, labels, label_names, method, max_points, seed, label_title), path,
                       tight=False)
