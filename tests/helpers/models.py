"""Shared pieces of the per-model tests: a tiny model built at a seed, a batch of its
modalities, a loss at a fixed seed, and torch.distributions views of diagonal Gaussians
(the formulas the objectives are checked against)."""
from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from omnivae import Batch, build_model


def build(tiny_config, name: str, names=("image", "label"), seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(tiny_config(name, names, **options))


def batch_of(model, data: dict, mask=None) -> Batch:
    return Batch({k: data[k] for k in model.names}, dict(mask or {}))


def pick(data: dict, names, n: int | None = None) -> dict:
    return {k: data[k][:n] for k in names}


def at_seed(model, batch: Batch, seed: int = 0, beta_scale: float = 1.0):
    torch.manual_seed(seed)
    return model.loss(batch, beta_scale)


def normal(mu: torch.Tensor, logvar: torch.Tensor) -> Normal:
    return Normal(mu, torch.exp(0.5 * logvar))


def kl_std(dist: Normal) -> torch.Tensor:
    """KL(dist || N(0, I)) summed over the last dim."""
    return kl_divergence(dist, Normal(0.0, 1.0)).sum(-1)
