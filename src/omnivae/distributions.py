"""Diagonal Gaussian posteriors, kept as plain (mu, logvar) tensors.

Everything is batched over arbitrary leading dimensions so that fusion over many
subsets and importance sampling over K draws are single tensor operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0  # exp(-12) ~ 6e-6, exp(8) ~ 3e3: no overflow in fusion
LOG_2PI = math.log(2 * math.pi)


def clamp_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """Keep log-variances in a range where precisions and exponentials stay finite."""
    return logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


@dataclass
class Gaussian:
    """N(mu, diag(exp(logvar))) with any leading shape; last dim is the latent dim."""

    mu: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, k: int | None = None) -> torch.Tensor:
        """Reparameterised draw; with k, a leading dim of k draws."""
        shape = self.mu.shape if k is None else (k, *self.mu.shape)
        eps = torch.randn(shape, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + eps * self.std

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log density summed over the latent dim (broadcasts z against mu)."""
        return log_normal(z, self.mu, self.logvar)

    def kl_standard(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over the latent dim."""
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)

    def kl_standard_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) of each latent dimension: same shape as mu."""
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def detach(self) -> "Gaussian":
        return Gaussian(self.mu.detach(), self.logvar.detach())

    def __getitem__(self, idx) -> "Gaussian":
        return Gaussian(self.mu[idx], self.logvar[idx])


def free_bits_kl(kl_per_dim: torch.Tensor, valid_mask: torch.Tensor | None, free_bits: float) -> torch.Tensor:
    """Per-example KL for the objective with free bits (Kingma et al. 2016): [..., B, D] -> [..., B].

    With m_d = mean over the valid examples (dim -2) of KL_d, each dimension contributes
    KL_d where m_d > free_bits and the constant free_bits elsewhere, so the valid-example
    mean of the result is sum_d max(free_bits, m_d) and dimensions below the floor get no
    gradient. Invalid examples keep their plain KL; free_bits == 0 gives kl_per_dim.sum(-1).
    """
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0 (nats per latent dimension), got {free_bits}")
    if free_bits == 0:
        return kl_per_dim.sum(-1)
    if valid_mask is None:
        weights = torch.ones_like(kl_per_dim[..., 0])
    else:
        if valid_mask.shape != kl_per_dim.shape[:-1]:
            raise ValueError(f"valid_mask has shape {list(valid_mask.shape)}, expected "
                             f"{list(kl_per_dim.shape[:-1])} (the KL's shape without the latent dim)")
        weights = valid_mask.to(kl_per_dim.dtype)
    w = weights.unsqueeze(-1)
    mean = (kl_per_dim * w).sum(-2, keepdim=True) / w.sum(-2, keepdim=True).clamp_min(1.0)  # [..., 1, D]
    floor = torch.full_like(kl_per_dim, float(free_bits))
    floored = torch.where(mean > free_bits, kl_per_dim, floor).sum(-1)
    return torch.where(weights > 0, floored, kl_per_dim.sum(-1))  # invalid examples: untouched


def kl_objective(q: Gaussian, valid_mask: torch.Tensor | None, free_bits: float) -> torch.Tensor:
    """KL(q || N(0, I)) per example [..., B] as the objective uses it: with free_bits > 0,
    each latent dim's batch-mean KL is floored at free_bits (see free_bits_kl); with 0,
    exactly q.kl_standard(). valid_mask [..., B] marks the examples the batch mean runs over."""
    if free_bits == 0:
        return q.kl_standard()
    return free_bits_kl(q.kl_standard_per_dim(), valid_mask, free_bits)


def kl_normal(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
              logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) of diagonal Gaussians, summed over the last
    dim (arguments broadcast against each other)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p)
                  - 1.0).sum(-1)


def masked_mean(values: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-example values [B] over the present examples (0 when none is); present None
    means all are (a batch without a mask for the modality: one op instead of six)."""
    if present is None:
        return values.mean()
    w = present.to(values.dtype)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
