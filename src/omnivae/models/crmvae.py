"""CRMVAE (Suzuki & Matsuo 2023, "Mitigating the limitations of multimodal VAEs with
coordination-based approach"): a product-of-experts posterior whose unimodal posteriors are
pulled towards it (coordination) and also learn to reconstruct their own modality.

With q(z|X) the product of the present unimodal posteriors q_m(z|x_m) (no prior expert, as in
MultiVae's implementation), M the number of present modalities and pi = 1 / (M + 1):
  objective = pi * sum_m [E_q(z|X) log p(x_m|z) + E_q_m(z|x_m) log p(x_m|z)]
              - beta * pi * [KL(q(z|X) || N(0, I)) + sum_m KL(q(z|X) || q_m(z|x_m))]
loss = -objective averaged over the examples with at least one modality. This is the
objective as MultiVae documents it (pi_m = 1 / (M + 1) for every term); MultiVae's code
divides the reconstructions by 2 (M + 1) instead. An incomplete example is treated as the
view set of its present modalities (M counts those, the sums run over them), as for mvtcae.
"""
from __future__ import annotations

from typing import Literal

import torch

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, kl_normal, masked_mean
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.models.mvtcae import MVTCAE
from omnivae.models.registry import register_model


class CRMVAEConfig(ModelConfig):
    model: Literal["crmvae"] = "crmvae"
    prior_expert: bool = False  # include N(0, I) in the product (not in the paper)


class CRMVAE(MultimodalModel):
    about = "coordination-based multimodal VAE with unimodal reconstructions"
    paper = "Suzuki & Matsuo 2023, Mitigating the limitations of multimodal VAEs with coordination-based approach"
    config_class = CRMVAEConfig

    fuse = MVTCAE.fuse  # the product of the present experts (with N(0, I) if prior_expert)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = self.encode_unimodal(batch)  # [M,B,D], [M,B]
        q = self.fuse(mu, logvar, present)
        z_joint = q.rsample()  # [B,D]
        z_uni = Gaussian(mu, logvar).rsample()  # [M,B,D]: one draw from each q_m
        presentf = present.to(mu.dtype)
        rec = torch.zeros_like(presentf[0])
        for i, name in enumerate(self.names):  # x_m from the joint draw and from its own draw
            if name in batch.data:
                rec = rec + self.log_likelihoods(torch.stack([z_joint, z_uni[i]]), batch, [name])[name].sum(0)
        kl = q.kl_standard() + (kl_normal(q.mu, q.logvar, mu, logvar) * presentf).sum(0)  # [B]
        pi = 1.0 / (presentf.sum(0) + 1.0)
        valid = present.any(0)
        rec_mean, kl_mean = masked_mean(pi * rec, valid), masked_mean(pi * kl, valid)
        total = -(rec_mean - self.config.beta * beta_scale * kl_mean)
        return LossOutput(total, {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach()})


register_model("crmvae", CRMVAE)
