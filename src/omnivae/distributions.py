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

    def detach(self) -> "Gaussian":
        return Gaussian(self.mu.detach(), self.logvar.detach())

    def __getitem__(self, idx) -> "Gaussian":
        return Gaussian(self.mu[idx], self.logvar[idx])


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
