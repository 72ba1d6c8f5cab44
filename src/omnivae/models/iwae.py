"""Importance weighted autoencoder (Burda, Grosse & Salakhutdinov 2016) on one modality.

With K draws z_k ~ q(z|x):
  log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x))
  bound   = log (1/K) sum_k w_k  (logsumexp in log space; K = 1 gives the one-draw ELBO)
loss = -bound. estimator "dreg" keeps the value but uses the doubly reparameterised
gradient (Tucker, Lawson, Gu & Maddison 2019): the encoder gets sum_k w~_k^2 d log w_k / dz_k
dz_k/dphi with q's parameters cut out of log q, the decoder the usual sum_k w~_k grad log w_k
(w~ = normalised weights). beta multiplies the log p(z) - log q term, as in MMVAE.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import field_validator

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, log_normal, log_standard_normal, masked_mean
from omnivae.errors import ConfigError
from omnivae.models.registry import register_model
from omnivae.models.base import ModelConfig, MultimodalModel


class IWAEConfig(ModelConfig):
    model: Literal["iwae"] = "iwae"
    k: int = 5  # importance samples per example
    estimator: Literal["iwae", "dreg"] = "iwae"

    @field_validator("k")
    @classmethod
    def _k_positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"k (importance samples) must be >= 1, got {v}")
        return v


class IWAE(MultimodalModel):
    about = "importance-weighted autoencoder"
    paper = "Burda et al. 2016, Importance weighted autoencoders; Tucker et al. 2019 (DReG)"
    config_class = IWAEConfig

    def check_config(self) -> None:
        if len(self.names) != 1:
            raise ConfigError(f"model 'iwae' takes exactly one modality, got {self.names}; "
                              "use mmvae with estimator iwae or dreg for several")

    def fuse(self, mu, logvar, present) -> Gaussian:
        """The encoder's q(z|x) itself (the prior N(0, I) where x is missing)."""
        none = ~present[0].unsqueeze(-1)
        return Gaussian(mu[0].masked_fill(none, 0.0), logvar[0].masked_fill(none, 0.0))

    def log_weights(self, batch: Batch, beta_scale: float = 1.0):
        """(log w [K,B], log p(x|z) [K,B], log q - log p [K,B], z [K,B,D])."""
        cfg, name = self.config, self.names[0]
        q = self.modalities[name].encode(batch.data[name])
        z = q.rsample(cfg.k)  # [K,B,D]
        rec = self.log_likelihoods(z, batch)[name]
        q_stop = q.detach() if cfg.estimator == "dreg" else q
        log_q = log_normal(z, q_stop.mu, q_stop.logvar)
        log_p = log_standard_normal(z)
        log_w = rec + cfg.beta * beta_scale * (log_p - log_q)
        return log_w, rec, log_q - log_p, z

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        cfg, name = self.config, self.names[0]
        present = batch.present(name)
        log_w, rec, kl, z = self.log_weights(batch, beta_scale)
        bound = masked_mean(torch.logsumexp(log_w, 0) - math.log(cfg.k), present)
        if cfg.estimator == "dreg":
            weights = torch.softmax(log_w.detach(), 0)  # [K,B], normalised in log space
            if z.requires_grad:
                z.register_hook(lambda g: weights.unsqueeze(-1) * g)
            surrogate = masked_mean((weights * log_w).sum(0), present)
            objective = bound.detach() + surrogate - surrogate.detach()  # value: the bound
        else:
            objective = bound
        total = -objective
        return LossOutput(total, {"loss": total.detach(), "rec": masked_mean(rec.mean(0), present).detach(),
                                  "kl": masked_mean(kl.mean(0), present).detach()})


register_model("iwae", IWAE)
