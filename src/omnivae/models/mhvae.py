"""MHVAE (Vasco, Melo & Paiva 2020, "MHVAE: a Human-Inspired Deep Hierarchical Generative Model
for Multimodal Representation Learning"): modality-specific latents z_m under a shared core
latent z_c, trained end to end on one hierarchical ELBO.

Generative model: p(z_c) p(z_m|z_c) p(x_m|z_m) for each modality, with p(z_c) = N(0, I) and
p(z_m|z_c) = N(mu_m(z_c), diag exp(lv_m(z_c))) from the modality's top-down network.
Inference: q(z_m|x_m) from each modality's encoder; q(z_c | z_1..z_M) from the core encoder, an
MLP over [z_m * s_m, s_m] for every modality m (s_m = 1 if the core encoder sees z_m, else 0),
so missing and dropped modalities enter as zeros plus their flag (modality dropout during
training, see omnivae.models.hierarchical: the paper's representation dropout).
With one draw z_m ~ q(z_m|x_m) per present modality and z_c ~ q(z_c | z_seen):
  ELBO = sum_m w_m log p(x_m|z_m)
         - modality_beta * sum_m [log q(z_m|x_m) - log p(z_m|z_c)]
         - beta * KL(q(z_c | z_seen) || N(0, I))
summed over the present modalities, averaged over the examples with at least one; w_m is the
modality's likelihood weight, beta_scale (KL warm-up) multiplies both KL weights. The modality
terms are the single-draw estimate at the very z_m the core posterior was inferred from (the
core posterior depends on them, so the closed-form KL(q(z_m|x_m) || p(z_m|z_c)) would be a
different quantity); gradients reach every network (no stop-gradient, unlike nexus).

User API: `encode` returns the core latent z_c (see omnivae.models.hierarchical): the core
encoder reads the means of the given modalities' posteriors. Generation decodes the mean of
p(z_m|z_c) for each target.
"""
from __future__ import annotations

from typing import Literal

import torch

from omnivae.batch import Batch, LossOutput
from omnivae.config import NonNegativeFloat
from omnivae.distributions import Gaussian, kl_normal, log_normal, masked_mean
from omnivae.modalities.base import mlp
from omnivae.models.hierarchical import HierarchicalConfig, HierarchicalModel, gaussian_head
from omnivae.models.registry import register_model


class MHVAEConfig(HierarchicalConfig):
    model: Literal["mhvae"] = "mhvae"
    modality_beta: NonNegativeFloat = 1.0  # weight of the modality terms log q(z_m|x_m) - log p(z_m|z_c)
    # what the core encoder reads of each modality latent: "mean" (the posterior mean, with the
    # modality terms in closed form) or "sample" (the drawn z_m, single-draw modality terms)
    core_input: Literal["mean", "sample"] = "sample"
    # each modality term also weighted by the modality's likelihood weight w_m (its whole ELBO rescaled)
    weighted_kl: bool = False


class MHVAE(HierarchicalModel):
    about = "hierarchical multimodal VAE: modality latents under a core latent"
    paper = ("Vasco et al. 2020, MHVAE: a human-inspired deep hierarchical generative model for "
             "multimodal representation learning")
    config_class = MHVAEConfig
    top_down_outputs = 2  # p(z_m|z_c): mean and log-variance

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        width = len(self.names) * (config.modality_dim + 1)
        self.core_encoder = mlp([width, *config.hidden, 2 * config.latent_dim])

    def top_posterior(self, z_m: torch.Tensor, seen: torch.Tensor) -> Gaussian:
        """q(z_c | [z_m * s_m, s_m] for every modality)."""
        s = seen.to(z_m.dtype).unsqueeze(-1)  # [M,B,1]
        h = torch.cat([torch.where(seen.unsqueeze(-1), z_m, torch.zeros_like(z_m)), s], -1)  # [M,B,W+1]
        return gaussian_head(self.core_encoder, h.transpose(0, 1).reshape(z_m.shape[1], -1))

    def conditional_prior_of(self, name: str, z_c: torch.Tensor) -> Gaussian:
        """p(z_m | z_c) for modality `name`."""
        return gaussian_head(self.top_down[name], z_c)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        cfg = self.config
        mu, logvar, present = self.encode_unimodal(batch)
        z_m = Gaussian(mu, logvar).rsample()  # [M,B,modality_dim]
        presentf = present.to(mu.dtype)
        means = cfg.core_input == "mean"
        q = self.top_posterior(mu if means else z_m, self.seen_by_top(present))
        z_c = q.rsample()
        rec = torch.zeros_like(presentf[0])
        kl_m = torch.zeros_like(presentf[0])
        weights = self.likelihood_weights()
        for i, name in enumerate(self.names):
            lls = self.log_likelihoods(z_m[i].unsqueeze(0), batch, [name])
            if name in lls:
                rec = rec + lls[name][0]
            p = self.conditional_prior_of(name, z_c)
            term = kl_normal(mu[i], logvar[i], p.mu, p.logvar) if means else \
                log_normal(z_m[i], mu[i], logvar[i]) - p.log_prob(z_m[i])
            kl_m = kl_m + term * presentf[i] * (weights[name] if cfg.weighted_kl else 1.0)
        kl_c = q.kl_standard()
        objective = rec - cfg.modality_beta * beta_scale * kl_m - cfg.beta * beta_scale * kl_c
        valid = present.any(0)
        total = -masked_mean(objective, valid)
        return LossOutput(total, {"loss": total.detach(), "rec": masked_mean(rec, valid).detach(),
                                  "kl": masked_mean(kl_m + kl_c, valid).detach(),
                                  "kl_modalities": masked_mean(kl_m, valid).detach(),
                                  "kl_core": masked_mean(kl_c, valid).detach()})


register_model("mhvae", MHVAE)
