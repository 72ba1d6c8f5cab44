"""Report figures written as PNG files from plain tensors, arrays and strings (no models needed).

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so a
backend the user chose is left untouched. A grid of pictures and captions is one axes showing one
composed picture, with its texts placed in that picture's pixel coordinates: creating and clearing an
axes costs about 8 ms, a text or an image tile almost nothing.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from omnivae.errors import InputError
from omnivae.report.common import FONT as _FONT
from omnivae.report.common import PathLike
from omnivae.report.common import as_array as _array
from omnivae.report.common import save_figure as _save
from omnivae.report.curves import read_metrics, scalar_curve, training_curves  # noqa: F401 (callers use figures.*)
from omnivae.report.latent import latent_map  # noqa: F401

_CELL = 1.6  # inches per image cell
_LINE = 0.12  # inches per caption line (7 pt text takes 0.112)
_GAP = 0.1  # inches between cells and around them
_TITLE = 0.35  # inches for a figure title

_Blocks = list[tuple[list[str], str]]  # lines of text under a cell, each block in its colour


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


def _rgba(rgb: np.ndarray) -> np.ndarray:
    """float32 RGB [H, W, 3] -> float32 RGBA, opaque: what matplotlib resamples without first converting
    the picture to float64 RGBA (about half the drawing time of an image board)."""
    out = np.ones((*rgb.shape[:2], 4), np.float32)
    out[..., :3] = rgb
    return out


def _chunks(items: list, n: int) -> list[list]:
    """Rows of n items (the last one shorter)."""
    return [items[i : i + n] for i in range(0, len(items), n)]


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """An image [h0, w0, 3] scaled (nearest pixel, aspect kept) and centred in a white h x w tile."""
    h0, w0 = img.shape[:2]
    if (h0, w0) == (h, w):
        return img
    s = min(h / h0, w / w0)
    nh, nw = max(1, round(h0 * s)), max(1, round(w0 * s))
    tile = np.ones((h, w, 3), np.float32)
    y, x = (h - nh) // 2, (w - nw) // 2
    tile[y : y + nh, x : x + nw] = img[(np.arange(nh) * h0 // nh)[:, None], np.arange(nw) * w0 // nw]
    return tile


def _write(ax, x: float, y: float, blocks: _Blocks) -> None:
    """Write blocks of (lines, colour) centred at x, the first with its top at y, each under the last."""
    below = None
    for lines, colour in blocks:
        if not lines:
            continue
        text = "\n".join(lines)
        style = dict(ha="center", va="top", fontsize=_FONT, color=colour, linespacing=1.15)
        below = (ax.text(x, y, text, **style) if below is None
                 else ax.annotate(text, (0.5, 0.0), xycoords=below, annotation_clip=False, **style))


def _board(items: list[list[Any]], under: list[list[_Blocks]] | None = None,
           row_titles: list[list[str]] | None = None, title: str | None = None, cell: float = _CELL,
           gap: float = _GAP) -> Figure:
    """A grid of cells drawn on one axes: items[r][c] is an image [H, W, 3] or a string (wrapped text in a
    box), a row shorter than the longest leaves its last cells blank; under[r][c] lists blocks of (lines,
    colour) written under the cell and row_titles[r] lines centred above row r. The images are composed
    into one picture (images of another size are scaled into the largest one's tile) shown by one imshow
    whose pixels are the data coordinates, and the page is sized from the content: `cell` inches per
    cell width, `gap` inches between cells, a text strip under each row as tall as its most lines."""
    pictures = [x for row in items for x in row if isinstance(x, np.ndarray)]
    h, w = max((p.shape[:2] for p in pictures), key=lambda s: s[0] * s[1], default=(64, 64))
    ppi = w / cell  # canvas pixels per inch

    def px(inches: float) -> int:
        return math.ceil(inches * ppi)

    ncol, pad = max(len(row) for row in items), px(gap)
    under = under or [[[] for _ in row] for row in items]
    y, tops = pad + (px(_TITLE) if title else 0), []
    for r in range(len(items)):
        y += px(len(row_titles[r]) * _LINE * (_FONT + 2) / _FONT + 0.05) if row_titles else 0
        lines = max((sum(len(ln) for ln, _ in blocks) for blocks in under[r]), default=0)
        tops.append(y)
        y += h + (px(lines * _LINE + 0.05) if lines else 0) + pad
    width, height = ncol * (w + pad) + pad, y
    canvas = np.ones((height, width, 3), np.float32)
    fig = Figure(figsize=(width / ppi, height / ppi))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    boxes = []
    box_lines = max(1, min(9, int((h / ppi - 0.1) / _LINE)))
    for r, (row, top) in enumerate(zip(items, tops)):
        if row_titles:
            ax.text(width / 2, top - 0.02 * ppi, "\n".join(row_titles[r]), ha="center", va="bottom",
                    fontsize=_FONT + 2, linespacing=1.15)
        for c, item in enumerate(row):
            left = pad + c * (w + pad)
            if isinstance(item, np.ndarray):
                canvas[top : top + h, left : left + w] = _fit(item, h, w)
            elif isinstance(item, str):
                boxes.append(Rectangle((left + 0.02 * w, top + 0.02 * h), 0.96 * w, 0.96 * h))
                ax.text(left + w / 2, top + h / 2, "\n".join(_wrap(item, 22, box_lines)), ha="center",
                        va="center", fontsize=_FONT)
            _write(ax, left + w / 2, top + h + 0.03 * ppi, under[r][c])
    ax.imshow(_rgba(canvas), extent=(0, width, height, 0), interpolation="nearest")
    ax.add_collection(PatchCollection(boxes, facecolor="#f4f4f4", edgecolor="#999", linewidth=1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    if title:
        ax.text(width / 2, pad + px(_TITLE) / 2, title, ha="center", va="center", fontsize="large")
    return fig


def _save_board(fig: Figure, path: PathLike) -> Path:
    """Save a figure made by _board at its own size; only when a text sticks out of the page (words too
    wide for their cell) is it cropped to what is drawn, which costs a second drawing pass."""
    renderer, page = FigureCanvasAgg(fig).get_renderer(), fig.bbox
    boxes = [t.get_window_extent(renderer) for t in fig.findobj(Text) if t.get_text()]
    inside = all(page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1 for b in boxes)
    return _save(fig, path, tight=not inside)


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
    ax.imshow(_rgba(_mosaic(rows)), interpolation="nearest")
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
    under = [[(gen[i], "black"), (true[i], "#777")] for i in range(n)]
    return _save_board(_board(_chunks(list(imgs), ncol), _chunks(under, ncol)), path)


def text_to_image_grid(prompts: list[str], images: Any, path: PathLike) -> Path:
    """One row of generated images [P, n, C, H, W] per prompt, titled by the prompt."""
    rows = _images(images, 5, "images")
    p, n = rows.shape[:2]
    prompts = _texts(prompts, p, "prompts")
    cell = max(0.5, min(1.4, 12.0 / n))
    titles = [_wrap(prompt, max(20, int(n * cell * 12)), 2) for prompt in prompts]
    return _save_board(_board([list(row) for row in rows], row_titles=titles, cell=cell, gap=0.05), path)


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
    items = [[query_items[i], *result_items[i]] for i in range(q)]
    under = [[[(["query"], "#1f5fa8")]] + [[([f"#{j + 1}  score {s[i, j]:.3g}"], "black")] for j in range(k)]
             for i in range(q)]
    return _save_board(_board(items, under, title=title), path)


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
    items = [imgs[i] if imgs is not None else txts[i] for i in order]
    under = [[([f"#{rank + 1}  score {s[i]:.4g}"], "#b22"),
              (_wrap(txts[i], max_lines=3) if imgs is not None and txts is not None else [], "black")]
             for rank, i in enumerate(order)]
    return _save_board(_board(_chunks(items, ncol), _chunks(under, ncol)), path)
