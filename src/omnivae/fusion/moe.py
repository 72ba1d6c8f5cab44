"""Mixture of experts (MMVAE, Shi et al. 2019): q(z|X) = mean of the present q_m(z|x_m)."""
from __future__ import annotations

import torch

from omnivae.distributions import Gaussian, log_normal


def sample_mixture(mu: torch.Tensor, logvar: torch.Tensor, weights: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One reparameterised draw per example from the mixture of the K components
    mu/logvar [K,B,D] with non-negative weights [K,B] (rows of zeros fall back to uniform; a
    caller that wants the prior for such rows sets their components to N(0, I), as MMVAE.draw does)."""
    w = weights.to(mu.dtype).T  # [B,K]
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
    pick = torch.multinomial(w, 1, generator=generator).squeeze(1)  # [B]
    rows = torch.arange(mu.shape[1], device=mu.device)
    m, lv = mu[pick, rows], logvar[pick, rows]
    # randn_like when no generator is given: torch.compile traces it with symbolic batch sizes
    eps = torch.randn_like(m) if generator is None else torch.randn(m.shape, generator=generator, dtype=m.dtype,
                                                                      device=m.device)
    return m + eps * torch.exp(0.5 * lv)


def mixture_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                     present: torch.Tensor) -> torch.Tensor:
    """log q(z) under the uniform mixture of present components (0 where none is present).

    z [...,B,D] against components [M,B,D] with presence [M,B] -> [...,B].
    """
    comp = log_normal(z.unsqueeze(-3), mu, logvar)  # [...,M,B]
    mask = present.to(torch.bool)
    comp = comp.masked_fill(~mask, -1e30)  # finite, so gradients stay finite too
    count = mask.sum(0)
    out = torch.logsumexp(comp, dim=-2) - torch.log(count.clamp_min(1).to(z.dtype))
    return torch.where(count > 0, out, torch.zeros_like(out))  # no component: 0 (caller masks it)


def moment_matched_mixture(mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor) -> Gaussian:
    """The Gaussian with the mean and variance of the uniform mixture of the present components:
    mu/logvar [M,B,D], presence [M,B] -> [B,D]; N(0, I) where no component is present. Its mean
    is the mixture's mean, which MMVAE and MMVAE+ use as the embedding."""
    w = present.to(mu.dtype).unsqueeze(-1)
    w = w / w.sum(0, keepdim=True).clamp_min(1.0)
    mean = (w * mu).sum(0)
    second = (w * (logvar.exp() + mu.pow(2))).sum(0)
    var = (second - mean.pow(2)).clamp_min(1e-6)
    none = ~present.any(0, keepdim=True).T  # [B,1]: no component -> the prior
    return Gaussian(mean.masked_fill(none, 0.0), torch.log(var).masked_fill(none, 0.0))
