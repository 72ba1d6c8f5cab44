"""Deterministic autoencoders on one modality: plain, denoising and sparse.

loss = -log p(x | h) + sparsity_weight * penalty(h),  with the code h = encoder mean of
x (the encoder's log-variance half is ignored) and p(x|h) the modality's own likelihood
(Bernoulli images: binary cross-entropy; Gaussian with a fixed scale: scaled squared error).
- denoising (Vincent et al. 2008, 2010): h encodes a corrupted copy of the encoder input
  (training only); the target stays the clean x.
- sparse, l1: penalty = sum_j |h_j| per example (Goodfellow et al. 2016, sec. 14.2.1).
- sparse, kl (Ng 2011, "Sparse autoencoder" notes): activations a = sigmoid(h), rho_hat =
  batch mean of a, penalty = sum_j KL(rho || rho_hat_j) for Bernoulli rates.
The code is returned by `fuse` as a Gaussian with a tiny variance, so encode, generate and
sample work through the shared API; sampling codes from N(0, I) is only rough here,
since nothing pulls a plain autoencoder's codes towards that prior.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import model_validator

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import LOGVAR_MIN, Gaussian, masked_mean
from omnivae.errors import ConfigError
from omnivae.modalities.base import Modality
from omnivae.models.registry import register_model
from omnivae.models.base import ModelConfig, MultimodalModel

RHO_EPS = 1e-6  # keeps log(rho_hat) and log(1 - rho_hat) finite in the KL sparsity penalty


def point_code(mu: torch.Tensor, present: torch.Tensor | None = None) -> Gaussian:
    """A deterministic code as a Gaussian with the smallest allowed variance; examples
    with no present modality get the prior N(0, I)."""
    logvar = torch.full_like(mu, LOGVAR_MIN)
    if present is not None:
        none = ~present.unsqueeze(-1)
        return Gaussian(mu.masked_fill(none, 0.0), logvar.masked_fill(none, 0.0))
    return Gaussian(mu, logvar)


class SingleModalityModel(MultimodalModel):
    """Shared by the one-modality deterministic models: the check and the point code."""

    deterministic_codes = True

    def check_config(self) -> None:
        if len(self.names) != 1:
            raise ConfigError(f"model {self.config.model!r} takes exactly one modality, got {self.names}; "
                              "use multimodal_ae for several")

    def fuse(self, mu, logvar, present) -> Gaussian:
        return point_code(mu[0], present[0])


class AEConfig(ModelConfig):
    model: Literal["ae"] = "ae"
    noise: Literal["none", "gaussian", "masking", "salt_pepper"] = "none"  # encoder-input corruption
    noise_level: float = 0.0  # gaussian: std; masking / salt_pepper: fraction of features hit
    sparsity: Literal["none", "l1", "kl"] = "none"
    sparsity_weight: float = 0.1
    sparsity_target: float = 0.05  # rho of the kl penalty

    @model_validator(mode="after")
    def _check_options(self):
        if self.noise != "none":
            if self.noise_level <= 0:
                raise ValueError(f"noise {self.noise!r} needs noise_level > 0, got {self.noise_level}")
            if self.noise in ("masking", "salt_pepper") and self.noise_level >= 1:
                raise ValueError(f"noise_level is the fraction of features corrupted by {self.noise!r}; "
                                 f"it must be below 1, got {self.noise_level}")
        if self.noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {self.noise_level}")
        if self.sparsity_weight < 0:
            raise ValueError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")
        if not 0 < self.sparsity_target < 1:
            raise ValueError(f"sparsity_target must lie strictly between 0 and 1, got {self.sparsity_target}")
        return self


class DAEConfig(AEConfig):
    model: Literal["dae"] = "dae"  # type: ignore[assignment]
    noise: Literal["none", "gaussian", "masking", "salt_pepper"] = "masking"
    noise_level: float = 0.3


class SparseAEConfig(AEConfig):
    model: Literal["sparse_ae"] = "sparse_ae"  # type: ignore[assignment]
    sparsity: Literal["none", "l1", "kl"] = "l1"


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """A corrupted copy of encoder features x (never in place), by the config's `noise`:
    gaussian adds noise of std `level`; masking zeroes a fraction `level` of the features;
    salt_pepper sets that fraction to the batch's smallest or largest value (0 or 1 for images)."""
    if noise == "gaussian":
        return x + level * torch.randn_like(x)
    hit = torch.rand_like(x) < level
    if noise == "masking":
        return x.masked_fill(hit, 0.0)
    salt = torch.rand_like(x) < 0.5
    lo, hi = x.min().detach(), x.max().detach()
    return torch.where(hit, torch.where(salt, hi, lo), x)


class AE(SingleModalityModel):
    about = "plain autoencoder"
    paper = "Hinton & Salakhutdinov 2006, Reducing the dimensionality of data with neural networks"
    config_class = AEConfig

    def check_config(self) -> None:
        super().check_config()
        if self.config.noise != "none":
            mod = self.modalities[self.names[0]]
            if type(mod).encode is not Modality.encode or not mod.continuous_features:
                raise ConfigError(f"model {self.config.model!r}: noise {self.config.noise!r} corrupts the "
                                  f"float features of image or vector inputs; modality {mod.name!r} is "
                                  f"{mod.kind!r} (use noise: none for it)")

    def code(self, batch: Batch) -> torch.Tensor:
        """The code h [B,D]: the encoder mean of (in training, corrupted) features."""
        name = self.names[0]
        mod = self.modalities[name]
        cfg = self.config
        if not (self.training and cfg.noise != "none"):
            return mod.encode(batch.data[name]).mu
        feats = mod.features(batch.data[name])
        if not feats.is_floating_point():
            raise ConfigError(f"modality {name!r}: noise needs float encoder inputs, got {feats.dtype}")
        return mod.encoder(corrupt(feats, cfg.noise, cfg.noise_level)).chunk(2, dim=-1)[0]

    def sparsity_penalty(self, h: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """Scalar penalty averaged over the present examples (kl: on their mean activation)."""
        cfg = self.config
        if cfg.sparsity == "l1":
            return masked_mean(h.abs().sum(-1), present)
        if cfg.sparsity == "kl":
            w = (present if present is not None else torch.ones(len(h), device=h.device)).to(h.dtype).unsqueeze(-1)
            count = w.sum()
            rho_hat = (torch.sigmoid(h) * w).sum(0) / count.clamp_min(1.0)
            rho_hat = rho_hat.clamp(RHO_EPS, 1 - RHO_EPS)
            rho = cfg.sparsity_target
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            return kl.sum() * (count > 0).to(h.dtype)  # no example present: no activations to penalise
        return h.new_zeros(())

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        name = self.names[0]
        present = batch.mask.get(name)  # None: every example has the modality
        h = self.code(batch)
        rec = masked_mean(self.log_likelihoods(h.unsqueeze(0), batch)[name][0], present)
        penalty = self.sparsity_penalty(h, present)
        total = -rec + self.config.sparsity_weight * penalty
        return LossOutput(total, {"loss": total.detach(), "rec": rec.detach(), "sparsity": penalty.detach()})


class DAE(AE):
    about = "denoising autoencoder"
    paper = "Vincent et al. 2008, Extracting and composing robust features with denoising autoencoders"
    config_class = DAEConfig


class SparseAE(AE):
    about = "sparse autoencoder (L1 on the code)"
    paper = "Ng 2011, Sparse autoencoder (CS294A lecture notes)"
    config_class = SparseAEConfig


register_model("ae", AE)
register_model("dae", DAE)
register_model("sparse_ae", SparseAE)
