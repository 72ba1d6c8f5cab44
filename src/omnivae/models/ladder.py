"""Ladder VAE (Sønderby, Raiko, Maaløe, Sønderby & Winther 2016, "Ladder variational
autoencoders") on one modality: stochastic layers z_1 (read by the decoder) .. z_L (the top),
L = len(layers) >= 2, layer i of size layers[i-1].

Generative model: p(z_L) = N(0, I); p(z_i | z_{i+1}) = N(mu_p_i, sigma_p_i^2), an MLP of z_{i+1};
p(x | z_1) the modality's own decoder and likelihood.
Inference, a deterministic bottom-up pass, then a stochastic top-down pass that shares the
generative model's top-down networks:
  bottom-up  (mu^_1, logvar^_1) = the modality's encoder(x);
             (mu^_{i+1}, logvar^_{i+1}) = up_i([mu^_i, logvar^_i])   (MLPs)
  top-down   q(z_L | x) = N(mu^_L, sigma^_L^2); for i = L-1 .. 1, given the draw z_{i+1},
             q(z_i | z_{i+1}, x) = N(mu_q, sigma_q^2) from the bottom-up and top-down parameters:
             posterior "residual" (default; the parameterisation of NVAE, Vahdat & Kautz 2020):
               the bottom-up pair is an offset of the prior, mu_q = mu_p_i + mu^_i,
               sigma_q = sigma_p_i sigma^_i, so KL_i = 1/2 sum(mu^_i^2 / sigma_p_i^2 + sigma^_i^2 - 1 - log sigma^_i^2)
             posterior "merge" (the paper's): their precision-weighted combination,
               sigma_q^-2 = sigma^_i^-2 + sigma_p_i^-2, mu_q = sigma_q^2 (mu^_i sigma^_i^-2 + mu_p_i sigma_p_i^-2)
loss = -E_q[log p(x | z_1)] + beta * [KL(q(z_L | x) || N(0, I))
                                      + sum_{i<L} KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))]
with one draw per layer and example and each KL in closed form given the drawn z_{i+1};
"kl" logs the sum, "kl_z<i>" layer i's term (which layers are in use).
On MNIST at a short budget (benchmarks/bench_deep_models.py) "residual" beats the flat VAE and
"merge" trails it; the top layer then carries almost no information (its KL is near 0): the
gain comes from the learned conditional prior of z_1 and the parameterisation, not from a
used hierarchy.

Codes: `encode` gives the top layer's posterior mean (q(z_L | x) is the bottom-up pass alone),
of size latent_dim = layers[-1]; fitted sampling priors (omnivae.priors) model it. `decode`
(and so `sample` and `generate`) takes a top code down the generative model with every lower
layer at its conditional mean z_i = mu_p_i(z_{i+1}), so one code always decodes the same way;
`reconstruct` uses the posterior means of every layer (the top-down pass with means for draws).
`log_importance_weights` scores the hierarchical proposal q(z_1..z_L | x) against
p(x, z_1..z_L) for omnivae.metrics.likelihood.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian, clamp_logvar, kl_normal, log_standard_normal, masked_mean
from omnivae.errors import ConfigError
from omnivae.modalities.base import mlp
from omnivae.modalities.ladder_branch import gaussian, residual
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.models.layer_sizes import code_size_from_layers
from omnivae.models.registry import register_model


def default_layers(latent_dim: int) -> list[int]:
    """Two layers, the lower twice the top's size (16 -> [32, 16])."""
    return [2 * latent_dim, latent_dim]


class LadderVAEConfig(ModelConfig):
    model: Literal["ladder_vae"] = "ladder_vae"
    # latent sizes from the bottom (read by the decoder) to the top; the last is latent_dim.
    # Unset: default_layers(latent_dim)
    layers: list[PositiveInt] = default_layers(16)
    hidden: list[PositiveInt] = [128]  # hidden widths of each bottom-up and top-down MLP between layers
    # q(z_i | z_{i+1}, x) below the top: "residual" (the bottom-up pair offsets the prior) or "merge"
    # (the paper's precision-weighted merge); see the module docstring
    posterior: Literal["residual", "merge"] = "residual"

    @model_validator(mode="before")
    @classmethod
    def _code_size_from_layers(cls, data: Any) -> Any:
        """Either size follows the other when only one is given (layers [64, 32, 8] sets latent_dim 8,
        latent_dim 20 sets layers [40, 20]); both given must agree (_check_layers)."""
        return code_size_from_layers(data, default_layers)

    @model_validator(mode="after")
    def _check_layers(self):
        if len(self.layers) < 2:
            raise ValueError(f"layers must list at least two latent sizes (bottom to top), got {self.layers}; "
                             "use vae for one")
        if self.layers[-1] != self.latent_dim:
            raise ValueError(f"the last of layers {self.layers} is the top code and must equal latent_dim "
                             f"{self.latent_dim}; drop one of them (either follows the other)")
        return self


def merge(a: Gaussian, b: Gaussian) -> Gaussian:
    """The precision-weighted combination of two Gaussians (their normalised product)."""
    pa, pb = torch.exp(-a.logvar), torch.exp(-b.logvar)
    precision = pa + pb
    return Gaussian((a.mu * pa + b.mu * pb) / precision, clamp_logvar(-torch.log(precision)))


def draw(q: Gaussian, k: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """A reparameterised draw from q (k: a leading dim of k draws); noise from `generator` if given."""
    shape = q.mu.shape if k is None else (k, *q.mu.shape)
    device = q.mu.device if generator is None else generator.device
    eps = torch.randn(shape, generator=generator, dtype=q.mu.dtype, device=device).to(q.mu.device)
    return q.mu + eps * q.std


class LadderVAE(MultimodalModel):
    about = "ladder VAE (a hierarchy of stochastic layers, top-down inference)"
    paper = "Sønderby et al. 2016, Ladder variational autoencoders"
    config_class = LadderVAEConfig
    encodes_modalities_apart = False  # its codes come through the ladder, not per-modality rows (see base)
    # a conditional flow's context is built from modality-width means; this model's codes are the top layer's
    supports_conditional_prior = False

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        sizes, hidden = config.layers, config.hidden
        self.up = nn.ModuleList(mlp([2 * a, *hidden, 2 * b]) for a, b in zip(sizes[:-1], sizes[1:]))
        self.down = nn.ModuleList(mlp([b, *hidden, 2 * a]) for a, b in zip(sizes[:-1], sizes[1:]))
        self.combine = residual if config.posterior == "residual" else merge

    @classmethod
    def modality_latent_dim(cls, config: ModelConfig) -> int:
        return config.layers[0]

    def check_config(self) -> None:
        if len(self.names) != 1:
            raise ConfigError(f"model 'ladder_vae' takes exactly one modality, got {self.names}")

    # -- the two passes ------------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[Gaussian]:
        """(mu^_i, logvar^_i) of every layer, bottom first: [B, layers[i-1]] each."""
        q = self.modalities[self.names[0]].encode(x)
        out = [q]
        for up in self.up:
            q = gaussian(up(torch.cat([q.mu, q.logvar], -1)))
            out.append(q)
        return out

    def layer_prior(self, i: int, z: torch.Tensor) -> Gaussian:
        """p(z_{i+1} | z_{i+2}) for 0-based layer index i, given the layer above's code z."""
        return gaussian(self.down[i](z))

    def top_down(self, up: Sequence[Gaussian], k: int | None = None, generator: torch.Generator | None = None,
                 mean: bool = False) -> list[tuple[torch.Tensor, Gaussian, Gaussian | None]]:
        """(z_i, q_i, p_i) from the top layer down (p of the top: None, meaning N(0, I)). Each z_i is
        a draw from q_i (with k, a leading dim of k draws; noise from `generator` if given), or
        its mean with mean=True."""
        q = up[-1]
        z = q.mu if mean else draw(q, k, generator)
        levels = [(z, q, None)]
        for i in reversed(range(len(up) - 1)):
            p = self.layer_prior(i, z)
            q = self.combine(up[i], p)
            z = q.mu if mean else draw(q, None, generator)
            levels.append((z, q, p))
        return levels

    # -- the objective ---------------------------------------------------------------------------
    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        name = self.names[0]
        levels = self.top_down(self.bottom_up(batch.data[name]))
        rec = self.log_likelihoods(levels[-1][0].unsqueeze(0), batch)[name][0]
        kls = [q.kl_standard() if p is None else kl_normal(q.mu, q.logvar, p.mu, p.logvar)
               for _, q, p in levels]  # [B] each, top first
        present = batch.mask.get(name)  # None: every example has the modality
        rec_mean, kl_mean = masked_mean(rec, present), masked_mean(torch.stack(kls).sum(0), present)
        total = -(rec_mean - self.config.beta * beta_scale * kl_mean)
        terms = {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach()}
        top = len(levels)
        terms.update({f"kl_z{top - j}": masked_mean(kl, present).detach() for j, kl in enumerate(kls)})
        return LossOutput(total, terms)

    @torch.no_grad()
    def log_importance_weights(self, batch: Batch, names: Sequence[str], k: int,
                               generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x, z_1..z_L) - log q(z_1..z_L | x) [k,B] for k draws of the top-down pass
        (likelihood unweighted by spec.weight); `names` can only be the one modality."""
        name = self.names[0]
        levels = self.top_down(self.bottom_up(batch.data[name]), k=k, generator=generator)
        log_w = self.modalities[name].log_likelihood(levels[-1][0], batch.data[name])
        for z, q, p in levels:
            log_w = log_w + (log_standard_normal(z) if p is None else p.log_prob(z)) - q.log_prob(z)
        return log_w

    # -- codes: the top layer ----------------------------------------------------------------------
    def encode_unimodal(self, batch: Batch, names: Sequence[str] | None = None):
        """q(z_L | x) as mu, logvar [1,B,latent_dim] and presence [1,B]; absent if not in `names`."""
        name = self.names[0]
        if name in batch.data and name in (self.names if names is None else names):
            q = self.bottom_up(batch.data[name])[-1]
            return q.mu.unsqueeze(0), q.logvar.unsqueeze(0), batch.present(name).unsqueeze(0)
        first = next(iter(batch.data.values()))
        zeros = first.new_zeros((1, len(first), self.config.latent_dim), dtype=torch.float32)
        return zeros, zeros, torch.zeros(1, len(first), dtype=torch.bool, device=first.device)

    def bottom_code(self, z: torch.Tensor) -> torch.Tensor:
        """Top codes [..., latent_dim] -> z_1 [..., layers[0]], each lower layer at its conditional mean."""
        for i in reversed(range(len(self.down))):
            z = self.layer_prior(i, z).mu
        return z

    def decoder_codes(self, name, z, mu, logvar, present, from_prior: bool = False) -> torch.Tensor:
        return self.bottom_code(z)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, targets: Sequence[str] | None = None, raw: bool = False, **options):
        """Top codes z [n,B,D] (or [B,D]) -> {name: output}, through bottom_code."""
        return super().decode(self.bottom_code(z), targets, raw=raw, **options)

    @torch.no_grad()
    def reconstruct(self, batch, mask=None, raw: bool = False, **options):
        """Decoded from the posterior means of every layer; rows without the modality from the prior mean."""
        batch = self.as_batch(batch, mask)
        name = self.names[0]
        z1 = self.top_down(self.bottom_up(batch.data[name]), mean=True)[-1][0]
        fallback = self.bottom_code(z1.new_zeros(len(z1), self.config.latent_dim))
        z1 = torch.where(batch.present(name).unsqueeze(-1), z1, fallback)
        return super().decode(z1, self.names, raw=raw, **options)


register_model("ladder_vae", LadderVAE)
