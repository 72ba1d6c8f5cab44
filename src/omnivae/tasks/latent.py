"""Latent-space paths: decode the way between the codes of two inputs (interpolation) and the
effect of one code dimension (traversal).

Codes are full codes (`model.full_code`: the joint posterior mean, with any private parts), so
what is decoded is what the decoders read. Interpolation is spherical for Gaussian latents
(codes under an N(0, I) prior lie near a shell, and the straight line between two of them cuts
through the low-density middle) and linear for deterministic autoencoders, whose codes have
no such shape (`model.deterministic_codes`)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from omnivae.errors import InputError

PATHS = ("auto", "linear", "spherical")
MAX_STEPS = 1000  # points on one path: more is almost surely a typo


@dataclass
class LatentPath:
    """Outputs of `target` decoded at the codes [steps, T] of a path; `t` (interpolation: 0 to 1)
    or the values a traversed dimension took; `dim` is the traversed dimension (None for an
    interpolation); `path` says how the codes were joined."""

    target: str
    t: list[float]
    codes: torch.Tensor
    outputs: Any  # a tensor [steps, ...] or a list of steps values (captions)
    path: str = "linear"
    dim: int | None = None


# -- checks ---------------------------------------------------------------------------------
def check_steps(steps, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, Integral) or not 2 <= steps <= MAX_STEPS:
        raise InputError(f"{name} must be a whole number from 2 to {MAX_STEPS}, got {steps!r}")
    return int(steps)


def check_dim(model, dim, name: str = "dim") -> int:
    width = model.full_code_dim()
    if isinstance(dim, bool) or not isinstance(dim, Integral) or not 0 <= dim < width:
        raise InputError(f"{name} is {dim!r}; the code has {width} dimensions (0..{width - 1})")
    return int(dim)


def check_range(low, high) -> tuple[float, float]:
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, Real) or not np.isfinite(v):
            raise InputError(f"{name} must be a finite number, got {v!r}")
    return float(low), float(high)


def resolve_path(model, path: str) -> str:
    """"auto" -> "linear" for deterministic codes, else "spherical"."""
    if path not in PATHS:
        raise InputError(f"path must be one of {PATHS}, got {path!r}")
    if path == "auto":
        return "linear" if getattr(model, "deterministic_codes", False) else "spherical"
    return path


def default_target(model, target: str | None) -> str:
    """`target`, checked; by default the first modality drawn as pictures, else the first drawn as
    texts, else the first modality."""
    from omnivae.modalities import figure_roles

    if target is not None:
        return model.check_names([target], "target")[0]
    pictures, texts = figure_roles({n: model.modalities[n] for n in model.names})
    return (pictures or texts or model.names)[0]


@contextmanager
def evaluating(model):
    """The model in eval mode inside the block, its mode restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# -- codes ----------------------------------------------------------------------------------
@torch.no_grad()
def codes_of(model, values) -> torch.Tensor:
    """Full codes [B, T] of inputs {modality: values} (or a Batch): what the decoders read."""
    batch = model.as_batch(values)
    mu, logvar, present = model.encode_unimodal(batch, list(batch.data))
    return model.full_code(mu, logvar, present)


def linear(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points [S, T] on the straight line from a to b [T] at t [S]."""
    return (1 - t)[:, None] * a + t[:, None] * b


def spherical(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Slerp: the direction turns along the great circle from a to b while the norm goes
    linearly from |a| to |b| (two codes of equal norm stay on their sphere). A zero code,
    or two (anti)parallel ones, have no single circle: the line is used."""
    na, nb = a.norm(), b.norm()
    if na < 1e-8 or nb < 1e-8:
        return linear(a, b, t)
    ua, ub = a / na, b / nb
    omega = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
    if omega < 1e-4 or omega > np.pi - 1e-4:
        return linear(a, b, t)
    s = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / s)[:, None] * ua + (torch.sin(t * omega) / s)[:, None] * ub
    return ((1 - t) * na + t * nb)[:, None] * direction


def path_codes(a: torch.Tensor, b: torch.Tensor, steps: int, path: str = "spherical"):
    """(t [steps], codes [steps, T]) from a to b, both ends included; path: linear or spherical."""
    t = torch.linspace(0.0, 1.0, check_steps(steps), dtype=a.dtype, device=a.device)
    if path not in ("linear", "spherical"):
        raise InputError(f"path must be 'linear' or 'spherical' here, got {path!r}")
    codes = (spherical if path == "spherical" else linear)(a, b, t)
    codes[0], codes[-1] = a, b  # exactly the ends, whatever the rounding
    return t, codes


# -- interpolation --------------------------------------------------------------------------
def pair(a, b):
    """Two single values of a modality -> one batch of two (stacked arrays, else a list)."""
    if hasattr(a, "shape") and hasattr(b, "shape") and getattr(a, "ndim", 0) > 0:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return torch.stack([torch.as_tensor(a), torch.as_tensor(b)])
        return np.stack([np.asarray(a), np.asarray(b)])
    return [a, b]


@torch.no_grad()
def interpolate_values(model, values: dict, target: str | None = None, steps: int = 8,
                       path: str = "auto") -> LatentPath:
    """Like `interpolate`, with the two inputs already one batch {modality: two values}."""
    steps, kind, target = check_steps(steps), resolve_path(model, path), default_target(model, target)
    with evaluating(model):
        code = codes_of(model, values)
        if len(code) != 2:
            raise InputError(f"interpolation joins two inputs; got {len(code)}")
        t, codes = path_codes(code[0], code[1], steps, kind)
        out = model.decode_full_code(codes, [target])[target]
    return LatentPath(target, t.tolist(), codes, out, kind)


def interpolate(model, a, b, modality: str, target: str | None = None, steps: int = 8,
                path: str = "auto") -> LatentPath:
    """Outputs of `target` (default: the first image modality) at `steps` points between the codes
    of two inputs `a` and `b` of `modality` (a caption, an image [C,H,W], ...), ends included.
    path: "spherical", "linear" or "auto" (linear for deterministic autoencoders, else spherical)."""
    model.check_names([modality], "modality")
    return interpolate_values(model, {modality: pair(a, b)}, target, steps, path)


# -- traversal ------------------------------------------------------------------------------
@torch.no_grad()
def start_code(model, inputs=None) -> torch.Tensor:
    """The code [T] a traversal starts from: that of one input {modality: [value]}, else the prior mean (0)."""
    if not inputs:
        return torch.zeros(model.full_code_dim(), device=model.device)
    code = codes_of(model, inputs)
    if len(code) != 1:
        raise InputError("a traversal starts from one input: give one value per modality")
    return code[0]


@torch.no_grad()
def traverse(model, dim: int, target: str | None = None, inputs=None, low: float = -3.0, high: float = 3.0,
             steps: int = 7) -> LatentPath:
    """Outputs of `target` as code dimension `dim` takes `steps` values from `low` to `high`, the
    other dimensions held at the code of `inputs` ({modality: [one value]}) or the prior mean."""
    dim, (low, high), steps = check_dim(model, dim), check_range(low, high), check_steps(steps)
    target = default_target(model, target)
    with evaluating(model):
        base = start_code(model, inputs)
        grid = torch.linspace(low, high, steps)
        codes = base.repeat(steps, 1)
        codes[:, dim] = grid.to(codes)
        out = model.decode_full_code(codes, [target])[target]
    return LatentPath(target, grid.tolist(), codes, out, "traversal", dim)


@torch.no_grad()
def active_dims(model, data, k: int = 8, limit: int = 5000) -> list[int]:
    """The k code dimensions whose posterior means vary most over `data` (RawData or TensorData;
    the first `limit` examples), most varied first."""
    from omnivae.tasks.embed import as_tensor_data

    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise InputError(f"k must be a whole number >= 1, got {k!r}")
    data = as_tensor_data(model, data)
    n = min(len(data), limit)
    if n < 2:
        raise InputError(f"active_dims needs at least 2 examples to measure variation, got {n}")
    with evaluating(model):
        parts = [codes_of(model, data.batch(torch.arange(i, min(n, i + 512)))) for i in range(0, n, 512)]
    var = torch.cat(parts).var(0)
    order = torch.argsort(-var, stable=True)
    return [int(i) for i in order[: min(k, len(var))]]


def traverse_grid(model, dims=None, target: str | None = None, inputs=None, data=None, k: int = 8,
                  low: float = -3.0, high: float = 3.0, steps: int = 7) -> list[LatentPath]:
    """One traversal per dimension in `dims` (one row each). Default dims: the k most active
    over `data` if given, else the first k."""
    if dims is None:
        dims = active_dims(model, data, k) if data is not None else list(range(min(k, model.full_code_dim())))
    dims = [check_dim(model, d) for d in dims]
    if not dims:
        raise InputError("give at least one dimension to traverse")
    return [traverse(model, d, target, inputs, low, high, steps) for d in dims]
