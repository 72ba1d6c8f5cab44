"""MoPoE-VAE (Sutter, Daunhawer & Vogt 2021): mixture over all 2^M - 1 subsets of
product-of-experts posteriors.

loss = -[E_{z ~ mixture} log p(X|z) - beta * mean_S KL(q_S(z|X_S) || p(z))]
All subset posteriors are one batched PoE; one valid subset is drawn per example.
With free_bits > 0 the KL term becomes sum_d max(free_bits, batch-mean of mean_S KL_d).
"""
from __future__ import annotations

from typing import Literal

import torch

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, free_bits_kl
from omnivae.fusion import all_subsets, mixture_of_products, product_of_experts
from omnivae.fusion.moe import sample_mixture
from omnivae.models.base import ModelConfig, MultimodalModel


class MoPoEConfig(ModelConfig):
    model: Literal["mopoe"] = "mopoe"
    prior_expert: bool = False


class MoPoE(MultimodalModel):
    about = "multimodal VAE, mixture of products of experts"
    paper = "Sutter et al. 2021, Generalized multimodal ELBO"
    config_class = MoPoEConfig
    supports_free_bits = True

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        self.register_buffer("subset_table", all_subsets(len(self.names)), persistent=False)

    def fuse(self, mu, logvar, present) -> Gaussian:
        return product_of_experts(mu, logvar, present.unsqueeze(0), self.config.prior_expert)[0]

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = self.encode_unimodal(batch)
        q, valid = mixture_of_products(mu, logvar, present, self.subset_table, self.config.prior_expert)
        z = sample_mixture(q.mu, q.logvar, valid)  # [B,D], one valid subset per example
        lls = self.log_likelihoods(z.unsqueeze(0), batch)
        rec = torch.stack(list(lls.values())).sum(0)[0]  # [B]
        validf = valid.to(z.dtype)
        kl = (q.kl_standard() * validf).sum(0) / validf.sum(0).clamp_min(1.0)  # [B]
        kl_term = kl
        if self.config.free_bits > 0:  # per-dim KL of the subset mixture, floored on its batch mean
            count = validf.sum(0).clamp_min(1.0).unsqueeze(-1)  # [B,1]
            per_dim = (q.kl_standard_per_dim() * validf.unsqueeze(-1)).sum(0) / count  # [B,D]
            kl_term = free_bits_kl(per_dim, valid.any(0), self.config.free_bits)
        elbo = rec - self.config.beta * beta_scale * kl_term
        total = -elbo.mean()
        return LossOutput(total, {"loss": total.detach(), "rec": rec.mean().detach(), "kl": kl.mean().detach()})
