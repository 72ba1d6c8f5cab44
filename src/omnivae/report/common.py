"""What every figure module shares: reading arrays with clear errors and saving a Figure as PNG."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from omnivae.errors import InputError
from omnivae.atomic import write_bytes

PathLike = str | os.PathLike
FONT = 7  # points, for legends, captions and small labels


def as_array(x: Any, name: str) -> np.ndarray:
    """A numpy array of numbers (or bools) from a tensor, array or nested list; InputError otherwise."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except ValueError as err:
        raise InputError(f"{name}: cannot be read as an array ({err})") from None
    if a.dtype != bool and not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{name}: expected numbers, got dtype {a.dtype}")
    return a


def save_figure(fig: Figure, path: PathLike, tight: bool = True) -> Path:
    """Render with Agg and write the PNG atomically. tight crops the page to what is drawn (plus 0.1 inch),
    which costs a second drawing pass: a figure sized from its content, or laid out by matplotlib's
    constrained layout, passes tight=False."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    crop = {"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}
    fig.savefig(buf, format="png", dpi=100, facecolor="white", **crop)
    return write_bytes(path, buf.getvalue())
