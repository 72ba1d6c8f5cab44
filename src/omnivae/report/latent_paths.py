"""Figures of latent-space paths (omnivae.tasks.latent): interpolation strips and traversal
grids, as image grids when the target's kind draws pictures and as tables of its texts (or
numbers) otherwise; and the report's "Latent space paths" section."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from omnivae.errors import InputError
from omnivae.report.common import FONT, PathLike, save_figure
from omnivae.report.figures import image_grid
from omnivae.report.html import Section

SECTION_TEXT = (
    "Interpolation: each row decodes {target} at {steps} points on the path between the codes of two test "
    "examples (all their modalities given), ends included; the path is {path} ({why}). Smooth, plausible "
    "in-between outputs mean the latent space is well filled between the data.\n\n"
    "Traversals: each row sets one code dimension to values from {low:g} to {high:g} (the columns), the other "
    "dimensions held at the prior mean (zero). The rows are the {k} dimensions whose posterior means vary most "
    "over the test data; a dimension that changes one property of the output (shape, colour, position) and "
    "nothing else is disentangled."
)
WHY = {"spherical": "codes under an N(0, I) prior lie near a sphere, and a straight line between two of them "
                    "crosses its sparse middle",
       "linear": "the model's codes are points with no prior shape"}


def _cell(item: Any) -> str:
    if isinstance(item, str):
        return item or '""'
    a = np.asarray(item.detach().cpu().numpy() if hasattr(item, "detach") else item).ravel()
    return ", ".join(f"{x:.3g}" for x in a[:4]) + (" …" if a.size > 4 else "")


def caption_table(rows: Sequence[Sequence[Any]], path: PathLike, row_labels: Sequence[str],
                  col_labels: Sequence[str], title: str | None = None) -> Path:
    """A table of outputs (captions, or a few numbers of other values) as a PNG: one row each."""
    cells = [[_cell(x) for x in row] for row in rows]
    if not cells or len(cells) != len(row_labels) or any(len(r) != len(col_labels) for r in cells):
        raise InputError(f"caption_table: expected {len(row_labels)} rows of {len(col_labels)} outputs")
    fig = Figure(figsize=(1.0 + 1.5 * len(col_labels), 0.3 * (len(cells) + 1) + (0.3 if title else 0)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    table = ax.table(cellText=cells, rowLabels=list(row_labels), colLabels=list(col_labels), loc="center",
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(FONT)
    if title:
        fig.suptitle(title, va="bottom", y=1.0)
    return save_figure(fig, path)


def path_figure(rows: Sequence[Any], path: PathLike, row_labels: Sequence[str], col_labels: Sequence[str],
                draw: Callable[[Any], Any] | None = None, title: str | None = None) -> Path:
    """Rows of decoded outputs (each the S outputs of one path) as a figure: `draw` (the target
    kind's `Modality.figure_items`) turns a row into pictures [S, C, H, W], drawn as an image grid,
    or into S short texts, drawn as a table; without it (or when it gives None) a table of numbers."""
    drawn = [draw(r) for r in rows] if draw is not None else None
    if drawn is None or any(d is None for d in drawn):
        return caption_table(rows, path, row_labels, col_labels, title)
    if all(isinstance(d, list) for d in drawn):
        return caption_table(drawn, path, row_labels, col_labels, title)
    import torch

    stacked = torch.stack([torch.as_tensor(d) for d in drawn])  # [R, S, C, H, W]
    return image_grid(stacked, path, row_labels=list(row_labels), col_labels=list(col_labels), title=title)


def interpolation_strip(paths: Sequence[Any], path: PathLike, draw: Callable[[Any], Any] | None = None,
                        row_labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """One row per interpolation (omnivae.tasks.latent.LatentPath), its columns the points t."""
    if not paths:
        raise InputError("interpolation_strip needs at least one path")
    labels = list(row_labels) if row_labels is not None else [f"path {i + 1}" for i in range(len(paths))]
    cols = [f"t={t:.2f}" for t in paths[0].t]
    return path_figure([p.outputs for p in paths], path, labels, cols, draw, title)


def traversal_grid(paths: Sequence[Any], path: PathLike, draw: Callable[[Any], Any] | None = None,
                   title: str | None = None) -> Path:
    """One row per traversed dimension ("dim 3"), its columns the values it took."""
    if not paths:
        raise InputError("traversal_grid needs at least one traversal")
    cols = [f"{v:.2g}" for v in paths[0].t]
    return path_figure([p.outputs for p in paths], path, [f"dim {p.dim}" for p in paths], cols, draw, title)


def distinct_pairs(data, count: int = 3) -> list[tuple[int, int]]:
    """Up to `count` pairs of examples (i, j), j the first later example whose targets differ from i's."""
    import torch

    n = len(data)
    targets = [v for v in getattr(data, "targets", {}).values() if len(v) == n]
    pairs: list[tuple[int, int]] = []
    for i in range(n - 1):
        j = next((j for j in range(i + 1, n) if any(bool(torch.as_tensor(t[j] != t[i]).any()) for t in targets)),
                 i + 1)
        if all(j != b for _, b in pairs):
            pairs.append((i, j))
        if len(pairs) == count:
            break
    return pairs


def latent_paths_section(model, data, fig_dir: PathLike, target: str | None = None, steps: int = 8,
                         k: int = 6, low: float = -3.0, high: float = 3.0) -> Section:
    """The report section: an interpolation strip between pairs of examples of `data` (TensorData or
    RawData) and a traversal grid of its k most active dimensions, decoded to `target` (default:
    the first image modality, else the first modality)."""
    import torch

    from omnivae.tasks.embed import as_tensor_data
    from omnivae.tasks.latent import active_dims, default_target, interpolate_values, resolve_path, traverse_grid

    data, fig_dir = as_tensor_data(model, data), Path(fig_dir)
    target = default_target(model, target)
    draw = model.modalities[target].figure_items
    title = "Latent space paths"
    if len(data) < 2:
        return Section(title, "Latent space paths need at least two test examples.")
    pairs = distinct_pairs(data)
    strips = [interpolate_values(model, data.batch(torch.tensor([i, j])), target, steps) for i, j in pairs]
    strip = interpolation_strip(strips, fig_dir / "interpolation.png", draw,
                                [f"#{i} → #{j}" for i, j in pairs])
    dims = active_dims(model, data, k)
    grid = traversal_grid(traverse_grid(model, dims, target, low=low, high=high, steps=7),
                          fig_dir / "traversals.png", draw)
    kind = resolve_path(model, "auto")
    text = SECTION_TEXT.format(target=target, steps=steps, path=kind, why=WHY[kind], low=low, high=high,
                               k=len(dims))
    return Section(title, text, images=[strip, grid])
