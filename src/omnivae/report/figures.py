"""Report figures written as PNG files from plain tensors, arrays and strings (no models needed).

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so a
backend the user chose is left untouched.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from omnivae.errors import InputError
from omnivae.report.common import FONT as _FONT
from omnivae.report.common import PathLike
from omnivae.report.common import as_array as _array
from omnivae.report.common import save_figure as _save
from omnivae.report.curves import read_metrics, scalar_curve, training_curves  # noqa: F401 (callers use figures.*)
from omnivae.report.latent import latent_map  # noqa: F401

_CELL = 1.6  # inches per image cell
_LINE = 0.15  # inches per caption line (7 pt text)


# ----------------------------------------------------------------------------- helpers
def _images(x: Any, ndim: int, name: str) -> np.ndarray:
    """Check an image batch [..., C, H, W] (C = 1 or 3) and return float RGB [..., H, W, 3] in [0, 1]."""
    a = _array(x, name)
    expected = "[N, C, H, W]" if ndim == 4 else "[R, N, C, H, W]"
    if a.ndim != ndim or a.shape[-3] not in (1, 3) or 0 in a.shape:
        raise InputError(f"{name}: expected shape {expected} with C = 1 or 3, got {tuple(a.shape)}")
    a = a / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    a = np.moveaxis(np.clip(a, 0.0, 1.0), -3, -1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def _is_texts(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, str) for t in x)


def _texts(x: Any, n: int | None, name: str) -> list[str]:
    if not _is_texts(x):
        raise InputError(f"{name}: expected a non-empty list of strings, got {type(x).__name__}")
    if n is not None and len(x) != n:
        raise InputError(f"{name}: expected {n} strings, got {len(x)}")
    return list(x)


def _positive_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise InputError(f"{name}: expected a positive integer, got {x!r}")
    return int(x)


def _wrap(text: str, width: int = 26, max_lines: int = 5) -> list[str]:
    """Wrap text into at most max_lines lines, ending with an ellipsis when cut."""
    lines = textwrap.wrap(text, width) or ['""']
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def _mosaic(rows: np.ndarray, pad: int = 2) -> np.ndarray:
    """Tile images [R, N, H, W, 3] into one picture with white gaps."""
    r, n, h, w, _ = rows.shape
    out = np.ones((r * (h + pad) + pad, n * (w + pad) + pad, 3), np.float32)
    for i in range(r):
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = rows[i, j]
    return out


def _cells(nrows: int, ncols: int, lines: int, title: str | None = None):
    """A figure of nrows x ncols cells, each a square main axes above a text strip of `lines` lines."""
    text_h = max(lines, 1) * _LINE + 0.08
    fig = Figure(figsize=(ncols * _CELL, nrows * (_CELL + text_h) + (0.4 if title else 0.0)))
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[_CELL, text_h] * nrows, hspace=0.06, wspace=0.08)
    main = [[fig.add_subplot(grid[2 * i, j]) for j in range(ncols)] for i in range(nrows)]
    text = [[fig.add_subplot(grid[2 * i + 1, j]) for j in range(ncols)] for i in range(nrows)]
    for ax in [a for row in main + text for a in row]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig, main, text


def _draw(ax, item: Any) -> None:
    """Show an image [H, W, 3] or a string as wrapped text in a box."""
    if isinstance(item, str):
        ax.add_patch(Rectangle((0.02, 0.02), 0.96, 0.96, transform=ax.transAxes, fc="#f4f4f4", ec="#999"))
        ax.text(0.5, 0.5, "\n".join(_wrap(item, 22, 9)), ha="center", va="center", fontsize=_FONT,
                transform=ax.transAxes)
    else:
        ax.imshow(item, interpolation="nearest")


def _write_lines(ax, lines: list[str], below=None, color: str = "black"):
    """Write lines at the top of a text strip, or just under the text artist `below`; return the artist."""
    if not lines:
        return below
    xy, coords = ((0.5, 0.0), below) if below is not None else ((0.5, 1.0), ax.transAxes)
    return ax.annotate("\n".join(lines), xy, xycoords=coords, ha="center", va="top", fontsize=_FONT,
                       color=color, linespacing=1.15, annotation_clip=False)


# ----------------------------------------------------------------------------- image figures
def image_grid(images: Any, path: PathLike, nrow: int | None = None, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Tile images [N, C, H, W] (`nrow` images per row, as in torchvision) or [R, N, C, H, W] (one row each)."""
    ndim = _array(images, "images").ndim
    if ndim == 5:
        rows = _images(images, 5, "images")
    else:
        flat = _images(images, 4, "images")
        ncol = _positive_int(nrow, "nrow") if nrow is not None else math.ceil(math.sqrt(len(flat)))
        ncol = min(ncol, len(flat))
        nrows = math.ceil(len(flat) / ncol)
        padded = np.ones((nrows * ncol, *flat.shape[1:]), np.float32)
        padded[: len(flat)] = flat
        rows = padded.reshape(nrows, ncol, *flat.shape[1:])
    r, n, h, w = rows.shape[:4]
    if row_labels is not None:
        _texts(list(row_labels), r, "row_labels")
    if col_labels is not None:
        _texts(list(col_labels), n, "col_labels")
    cell = max(0.4, min(1.2, 12.0 / n))
    fig = Figure(figsize=(n * cell, r * cell * h / w))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(_mosaic(rows), interpolation="nearest")
    ax.set_xticks([2 + (w + 2) * (j + 0.5) for j in range(n)] if col_labels is not None else [])
    ax.set_yticks([2 + (h + 2) * (i + 0.5) for i in range(r)] if row_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels(["\n".join(_wrap(c, 18, 2)) for c in col_labels], fontsize=_FONT + 1)
        ax.xaxis.tick_top()
    if row_labels is not None:
        ax.set_yticklabels(["\n".join(_wrap(c, 28, 3)) for c in row_labels], fontsize=_FONT + 1)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, y=1.0 + (0.25 / (r * cell)) * (col_labels is not None), va="bottom")
    return _save(fig, path)


def captioned_images(images: Any, captions: list[str] | list[list[str]], path: PathLike,
                     true_captions: list[str] | None = None, ncol: int = 4) -> Path:
    """Each image [N, C, H, W] above its generated caption(s), with the true caption in grey if given."""
    imgs = _images(images, 4, "images")
    n = len(imgs)
    if not isinstance(captions, (list, tuple)) or len(captions) != n:
        raise InputError(f"captions: expected a list of {n} captions (or {n} lists), got {captions!r:.80}")
    cap_lists = [[c] if isinstance(c, str) else list(c) if _is_texts(c) else None for c in captions]
    if any(c is None for c in cap_lists):
        raise InputError("captions: each entry must be a string or a non-empty list of strings")
    truths = _texts(true_captions, n, "true_captions") if true_captions is not None else [None] * n
    gen = [[ln for k, c in enumerate(cs) for ln in _wrap(f"{k + 1}. {c}" if len(cs) > 1 else c)] for cs in cap_lists]
    true = [_wrap(f"true: {t}", max_lines=3) if t is not None else [] for t in truths]
    ncol = min(_positive_int(ncol, "ncol"), n)
    fig, main, text = _cells(math.ceil(n / ncol), ncol, max(len(g) + len(t) for g, t in zip(gen, true)))
    for i in range(n):
        r, c = divmod(i, ncol)
        _draw(main[r][c], imgs[i])
        _write_lines(text[r][c], true[i], _write_lines(text[r][c], gen[i]), color="#777")
    return _save(fig, path)


def text_to_image_grid(prompts: list[str], images: Any, path: PathLike) -> Path:
    """One row of generated images [P, n, C, H, W] per prompt, titled by the prompt."""
    rows = _images(images, 5, "images")
    p, n, h, w = rows.shape[:4]
    prompts = _texts(prompts, p, "prompts")
    cell = max(0.5, min(1.4, 12.0 / n))
    fig = Figure(figsize=(n * cell, p * (cell * h / w + 0.35)), layout="constrained")
    for ax, prompt, row in zip(fig.subplots(p, 1, squeeze=False)[:, 0], prompts, rows):
        ax.imshow(_mosaic(row[None]), interpolation="nearest")
        ax.set_title("\n".join(_wrap(prompt, max(20, int(n * cell * 14)), 2)), fontsize=_FONT + 2)
        ax.axis("off")
    return _save(fig, path)


def retrieval_examples(queries: Any, results: Any, scores: Any, path: PathLike, title: str | None = None) -> Path:
    """One row per query: the query (image or text) then its top-K results (images or texts) with scores."""
    query_items = _texts(queries, None, "queries") if _is_texts(queries) else list(_images(queries, 4, "queries"))
    q = len(query_items)
    if isinstance(results, (list, tuple)) and results and all(_is_texts(r) for r in results):
        if len(results) != q or len({len(r) for r in results}) != 1:
            raise InputError(f"results: expected {q} lists of K strings each, got lengths {[len(r) for r in results]}")
        result_items = [list(r) for r in results]
    else:
        result_items = _images(results, 5, "results")
        if len(result_items) != q:
            raise InputError(f"results: expected {q} rows (one per query), got shape {result_items.shape[:2]}")
    k = len(result_items[0])
    s = _array(scores, "scores").astype(float)
    if s.shape != (q, k):
        raise InputError(f"scores: expected shape {(q, k)} (queries x results), got {tuple(s.shape)}")
    fig, main, text = _cells(q, k + 1, 1, title)
    for i in range(q):
        _draw(main[i][0], query_items[i])
        _write_lines(text[i][0], ["query"], color="#1f5fa8")
        for j in range(k):
            _draw(main[i][j + 1], result_items[i][j])
            _write_lines(text[i][j + 1], [f"#{j + 1}  score {s[i, j]:.3g}"])
    return _save(fig, path)


def anomaly_examples(images: Any | None, texts: list[str] | None, scores: Any, path: PathLike, k: int = 8,
                     ncol: int = 4) -> Path:
    """The k highest-scoring examples (image and/or text), most anomalous first, with their scores."""
    if images is None and texts is None:
        raise InputError("anomaly_examples needs images, texts or both; got neither")
    s = _array(scores, "scores").astype(float)
    if s.ndim != 1 or len(s) == 0 or not np.isfinite(s).all():
        raise InputError(f"scores: expected a finite 1-D array [N], got shape {tuple(s.shape)}")
    n = len(s)
    imgs = _images(images, 4, "images") if images is not None else None
    if imgs is not None and len(imgs) != n:
        raise InputError(f"images: expected {n} images (one per score), got {len(imgs)}")
    txts = _texts(texts, n, "texts") if texts is not None else None
    k = min(_positive_int(k, "k"), n)
    order = np.argsort(-s, kind="stable")[:k]
    ncol = min(_positive_int(ncol, "ncol"), k)
    under = [_wrap(txts[i], max_lines=3) if (imgs is not None and txts is not None) else [] for i in order]
    fig, main, text = _cells(math.ceil(k / ncol), ncol, 1 + max(len(u) for u in under))
    for rank, (i, caption) in enumerate(zip(order, under)):
        r, c = divmod(rank, ncol)
        _draw(main[r][c], imgs[i] if imgs is not None else txts[i])
        score = _write_lines(text[r][c], [f"#{rank + 1}  score {s[i]:.4g}"], color="#b22")
        _write_lines(text[r][c], caption, score)
    return _save(fig, path)
