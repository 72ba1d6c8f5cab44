"""MVTCAE (Hwang, Kim, Hong & Kim 2021, "Multi-View Representation Learning via Total
Correlation Objective"): product-of-experts posterior trained on a total-correlation bound.

With q(z|X) the product of the present unimodal posteriors (no prior expert, as in the
reference code) and M the number of present modalities of an example:
  objective = (M - alpha) / M * E_q(z|X) log p(X|z)
              - beta * [(1 - alpha) * KL(q(z|X) || N(0, I))
                        + alpha / M * sum_m KL(q(z|X) || q_m(z|x_m))]
loss = -objective averaged over the examples with at least one modality. It is the
alpha-weighted sum of a VIB term, (1 - alpha) * [E log p(X|z) - beta KL(q(z|X) || p)],
and M conditional VIB terms, alpha / M * sum_m [E log p(X without x_m | z) - beta
KL(q(z|X) || q_m)]: the reconstructions add up to (M - alpha) / M * E log p(X|z).
On complete data M is the number of modalities; an incomplete example is treated as the
view set of its present modalities. alpha defaults to 5/6, the value of MultiVae's
PolyMNIST reproduction of the paper (MultiVae's config default is 0.1).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import field_validator

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, kl_normal, masked_mean
from omnivae.fusion import product_of_experts
from omnivae.models.registry import register_model
from omnivae.models.base import ModelConfig, MultimodalModel


class MVTCAEConfig(ModelConfig):
    model: Literal["mvtcae"] = "mvtcae"
    alpha: float = 5.0 / 6.0  # 0: plain PoE VAE (VIB); 1: only the conditional VIB terms
    prior_expert: bool = False  # include N(0, I) in the product (not in the paper)

    @field_validator("alpha")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {v}")
        return v


class MVTCAE(MultimodalModel):
    about = "multi-view total-correlation autoencoder"
    paper = "Hwang et al. 2021, Multi-view representation learning via total correlation objective"
    config_class = MVTCAEConfig

    def fuse(self, mu, logvar, present) -> Gaussian:
        return product_of_experts(mu, logvar, present.unsqueeze(0), self.config.prior_expert)[0]

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        cfg = self.config
        mu, logvar, present = self.encode_unimodal(batch)
        q = self.fuse(mu, logvar, present)  # [B,D]
        z = q.rsample(1)
        rec = torch.stack(list(self.log_likelihoods(z, batch).values())).sum(0)[0]  # [B]
        presentf = present.to(rec.dtype)
        m = presentf.sum(0).clamp_min(1.0)  # [B]
        kl = q.kl_standard()
        kl_uni = (kl_normal(q.mu, q.logvar, mu, logvar) * presentf).sum(0)  # [B]
        beta = cfg.beta * beta_scale
        objective = (m - cfg.alpha) / m * rec - beta * ((1 - cfg.alpha) * kl + cfg.alpha / m * kl_uni)
        valid = present.any(0)
        total = -masked_mean(objective, valid)
        return LossOutput(total, {"loss": total.detach(), "rec": masked_mean(rec, valid).detach(),
                                  "kl": masked_mean(kl, valid).detach(),
                                  "kl_unimodal": masked_mean(kl_uni, valid).detach()})


register_model("mvtcae", MVTCAE)
