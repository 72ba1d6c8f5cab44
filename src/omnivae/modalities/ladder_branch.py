"""Private ladder layers below a modality's code: a hierarchical (ladder) branch inside any
model (Sønderby et al. 2016's ladder, with NVAE's residual posterior, Vahdat & Kautz 2020).

With `ladder: [l_1, ..., l_K]` in an image spec, the modality's decoder reads z_1 (size l_1),
and the layers run from the code the model gives the modality (z_{K+1} = z, its shared or
fused code) down to z_1:

    p(z_i | z_{i+1}) = N(mu_p, sigma_p^2)                    an MLP of the layer above (`down`)
    q(z_i | z_{i+1}, x) = N(mu_p + mu^_i, sigma_p^2 sigma^_i^2)   (mu^_i, sigma^_i) from x (`up`)

`log_likelihood(z, x)` is then the ELBO of log p(x | z) over the private layers, with one draw
per layer and the KL terms in closed form:

    log p(x | z) >= E_q[log p(x | z_1)] - sum_i KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))

so every model's objective stays a valid bound with no change to its fusion or its KL terms:
the shared code fuses across modalities as before, and the private layers hold what only this
modality shows (an image's position or style), drawn from p(z_i | z_{i+1}) when it is generated.
Decoding takes every private layer at its conditional mean (a code always decodes the same way)
unless `sample` asks for draws. The bottom-up network (`up`) is a narrow network of its own
(half the encoder's widths); the encoder's pass is not repeated. Likelihood estimates that use
`log_likelihood` (importance-weighted NLL) score this bound, not log p(x | z) itself.
"""
from __future__ import annotations

import torch
from torch import nn

from omnivae.distributions import Gaussian, clamp_logvar, kl_normal
from omnivae.modalities.base import full_precision, mlp


def gaussian(h: torch.Tensor) -> Gaussian:
    """Network output [..., 2n] -> N(mu, exp(logvar)) [..., n]."""
    mu, logvar = full_precision(h).chunk(2, dim=-1)
    return Gaussian(mu, clamp_logvar(logvar))


def residual(offset: Gaussian, p: Gaussian) -> Gaussian:
    """p shifted by offset.mu and its standard deviation scaled by offset.std: N(mu_p + mu^, sigma_p^2 sigma^2)
    (broadcasting, so one offset per example serves several draws of the layer above)."""
    return Gaussian(p.mu + offset.mu, clamp_logvar(p.logvar + offset.logvar))


class LadderBranch(nn.Module):
    """Private layers `sizes` (bottom first) under a code of size code_dim; `up` maps the
    modality's encoder features [B, ...] to the bottom-up estimates [B, 2 * sum(sizes)]."""

    def __init__(self, code_dim: int, sizes: list[int], hidden: list[int], up: nn.Module):
        super().__init__()
        self.sizes = list(sizes)
        chain = [*self.sizes, code_dim]
        self.down = nn.ModuleList(mlp([b, *hidden, 2 * a]) for a, b in zip(chain[:-1], chain[1:]))
        self.up = up

    def estimates(self, features: torch.Tensor) -> list[Gaussian]:
        """Bottom-up (mu^_i, logvar^_i) of every private layer, bottom first: [B, l_i] each."""
        h = full_precision(self.up(features))
        out, start = [], 0
        for size in self.sizes:
            out.append(gaussian(h[:, start:start + 2 * size]))
            start += 2 * size
        return out

    def bottom(self, z: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Codes [..., code_dim] -> z_1 [..., l_1] down the generative model: each layer at its
        conditional mean, or drawn from p(z_i | z_{i+1}) with sample=True."""
        for down in reversed(self.down):
            p = gaussian(down(z))
            z = p.mu + torch.randn_like(p.mu) * p.std if sample else p.mu
        return z

    def posterior_bottom(self, z: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_1 [..., B, l_1], summed KL [..., B]) for codes z [..., B, code_dim] and the inputs'
        features [B, ...]: one reparameterised draw per layer from q(z_i | z_{i+1}, x)."""
        kl = z.new_zeros(z.shape[:-1])
        for down, offset in zip(reversed(self.down), reversed(self.estimates(features))):
            p = gaussian(down(z))
            q = residual(offset, p)
            z = q.mu + torch.randn_like(q.mu) * q.std
            kl = kl + kl_normal(q.mu, q.logvar, p.mu, p.logvar)
        return z, kl
