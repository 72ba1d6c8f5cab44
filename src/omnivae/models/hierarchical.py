"""Shared parts of the two-level model `nexus`: a latent z_m per modality (each
modality's own encoder q(z_m|x_m) and decoder p(x_m|z_m), of size `modality_dim`) under a top
latent z (size `latent_dim`) inferred from the z_m, with a top-down network per modality from
z back to z_m.

User API: the latent of `encode`, `fuse`, `draw`, `prior_sample` and `sample` is the top latent
z. `fuse` infers it from the means of the given modalities' q(z_m|x_m) (N(0, I) where none is
given); `decode` maps top codes through each target's top-down network (its mean) to z_m and
decodes that, so every generation, cross-modal or not, and `reconstruct` go through z.
`encode_unimodal` returns the q(z_m|x_m) [M,B,modality_dim], and `log_likelihoods` (as in
every model) scores modality latents z_m, not top codes.

Modality dropout (the Nexus paper): while training, each example with at least two present
modalities has, with probability `modality_dropout`, only a random non-empty proper subset of
them seen by the top encoder (subset size uniform in 1..k-1 for k present, then a uniform
choice of that many), so the top posterior also learns to work from partial inputs.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import field_validator
from torch import nn

from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian
from omnivae.errors import ConfigError, InputError
from omnivae.modalities.base import full_precision, mlp
from omnivae.modalities.ladder_branch import gaussian
from omnivae.models.base import ModelConfig, MultimodalModel


class HierarchicalConfig(ModelConfig):
    modality_dim: PositiveInt = 32  # size of each modality's latent z_m (latent_dim: the top latent)
    hidden: list[PositiveInt] = [64]  # hidden widths of the top encoder and of each top-down network
    modality_dropout: float = 0.2  # chance that the top encoder sees only a random subset of an example's modalities

    @field_validator("modality_dropout")
    @classmethod
    def _rate(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"modality_dropout must lie in [0, 1), got {v}")
        return v


def drop_modalities(present: torch.Tensor, rate: float) -> torch.Tensor:
    """Which modalities [M,B] the top encoder sees (see the module docstring). The random draws
    have fixed shapes, so they do not depend on the data or the mask."""
    m, b = present.shape
    count = present.sum(0)  # [B]
    dropped = (torch.rand(b, device=present.device) < rate) & (count >= 2)
    size = (torch.rand(b, device=present.device) * (count - 1)).floor().long() + 1  # uniform in 1..count-1
    scores = torch.rand(m, b, device=present.device).masked_fill(~present, 2.0)  # absent ones rank last
    rank = scores.argsort(0).argsort(0)
    return present & (~dropped | (rank < size))


def gaussian_head(net: nn.Module, h: torch.Tensor) -> Gaussian:
    """A network whose outputs are [mu, logvar] -> that Gaussian."""
    return gaussian(net(h))


class HierarchicalModel(MultimodalModel):
    """A top latent over modality latents; subclasses give `top_posterior` and the objective."""

    config_class = HierarchicalConfig
    top_down_outputs: ClassVar[int] = 1  # the top-down network gives the mean of z_m (2: mean and logvar)

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        out = self.top_down_outputs * config.modality_dim
        self.top_down = nn.ModuleDict({n: mlp([config.latent_dim, *config.hidden, out]) for n in self.names})

    def check_config(self) -> None:
        if len(self.names) < 2:
            raise ConfigError(f"model {self.config.model!r} needs at least two modalities, got {self.names}; "
                              "use vae for one")

    @classmethod
    def modality_latent_dim(cls, config: HierarchicalConfig) -> int:
        return config.modality_dim

    def top_down_mean(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """Mean of z_m given top codes z [...,latent_dim] -> [...,modality_dim]."""
        return full_precision(self.top_down[name](z))[..., :self.config.modality_dim]

    def top_posterior(self, z_m: torch.Tensor, seen: torch.Tensor) -> Gaussian:
        """q(z | the seen modality latents): z_m [M,B,modality_dim], seen [M,B] -> [B,latent_dim]."""
        raise NotImplementedError

    def fuse(self, mu, logvar, present) -> Gaussian:
        """The top posterior from the means of the present modalities' q(z_m|x_m); N(0, I) where
        no modality is present."""
        q = self.top_posterior(mu, present)
        none = ~present.any(0).unsqueeze(-1)  # [B,1]
        return Gaussian(q.mu.masked_fill(none, 0.0), q.logvar.masked_fill(none, 0.0))

    def decoder_codes(self, name, z, mu, logvar, present, from_prior: bool = False) -> torch.Tensor:
        """Modality `name`'s decoder reads the mean of its top-down network at the top code z."""
        return self.top_down_mean(name, z)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, targets=None, raw: bool = False, **options):
        """Top codes z [n,B,latent_dim] (or [B,latent_dim]) -> {name: output}: each target decodes
        the mean of its top-down network at z."""
        if z.shape[-1] != self.config.latent_dim:
            raise InputError(f"{self.config.model} decodes top-level codes of size {self.config.latent_dim}, "
                             f"got shape {list(z.shape)}")
        out = {}
        for name in targets or self.names:
            out.update(super().decode(self.top_down_mean(name, z), [name], raw=raw, **options))
        return out

    def seen_by_top(self, present: torch.Tensor) -> torch.Tensor:
        """The modalities the top encoder sees in this step: modality dropout while training."""
        if self.training and self.config.modality_dropout > 0:
            return drop_modalities(present, self.config.modality_dropout)
        return present
