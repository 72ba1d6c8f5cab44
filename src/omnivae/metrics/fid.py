"""Fréchet distance between two feature sets, each summarised by a Gaussian (mean, covariance)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from omnivae.errors import InputError


def _features(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] == 0:
        raise InputError(f"{name}: expected [N, D] with N >= 2 and D >= 1, received shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: expected finite values, received NaN or inf")
    return a


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), computed in float64.

    The trace of (S_a S_b)^(1/2) equals that of (A S_b A)^(1/2) with A = S_a^(1/2), which is
    symmetric, so eigen decompositions give it without complex parts.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feats_b: expected [M, {a.shape[1]}] like feats_a, received {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross
    return float(max(value, 0.0))


@torch.no_grad()
def feature_frechet_distance(
    images_a: torch.Tensor, images_b: torch.Tensor,
    feature_fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256,
) -> float:
    """Fréchet distance on the project's own classifier features, not comparable to Inception FID."""
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{name}: expected a tensor [N, ...] with N >= 2, received {shape}")
    if images_a.shape[1:] != images_b.shape[1:]:
        raise InputError(
            f"images_b: expected [M, {', '.join(map(str, images_a.shape[1:]))}] like images_a, "
            f"received {tuple(images_b.shape)}"
        )
    if batch_size < 1:
        raise InputError(f"batch_size: expected a positive int, received {batch_size!r}")

    def embed(x: torch.Tensor) -> torch.Tensor:
        parts = [feature_fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        return torch.cat([p.reshape(p.shape[0], -1).double().cpu() for p in parts])

    return frechet_distance(embed(images_a), embed(images_b))
