"""Mixture of products of experts (MoPoE-VAE, Sutter et al. 2021): a PoE for every
non-empty subset of modalities, then a uniform mixture over the subsets."""
from __future__ import annotations

import itertools
from functools import lru_cache

import torch

from omnivae.distributions import Gaussian
from omnivae.fusion.poe import product_of_experts


@lru_cache(maxsize=32)
def _subsets(m: int) -> tuple[tuple[bool, ...], ...]:
    rows = []
    for size in range(1, m + 1):
        for combo in itertools.combinations(range(m), size):
            rows.append(tuple(i in combo for i in range(m)))
    return tuple(rows)


def all_subsets(m: int, device=None) -> torch.Tensor:
    """Bool [2^m - 1, m]: every non-empty subset of m modalities, smallest first."""
    if m < 1 or m > 16:
        raise ValueError(f"number of modalities must be in 1..16, got {m}")
    return torch.tensor(_subsets(m), dtype=torch.bool, device=device)


def mixture_of_products(mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor,
                        subsets: torch.Tensor, prior_expert: bool = False) -> tuple[Gaussian, torch.Tensor]:
    """PoE of every subset at once: experts [M,B,D], presence [M,B], subsets [S,M] ->
    (Gaussian [S,B,D], valid [S,B]); a subset is valid for an example when at least
    one of its modalities is present (its PoE then uses only the present ones)."""
    weights = subsets.unsqueeze(-1) & present.unsqueeze(0).to(torch.bool)  # [S,M,B]
    valid = weights.any(1)
    return product_of_experts(mu, logvar, weights, prior_expert=prior_expert), valid
