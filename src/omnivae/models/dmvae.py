"""DMVAE (Lee & Pavlovic 2021, "Private-shared disentangled multimodal VAE for learning of
latent representations"): each modality encodes to a shared code z and a private code w_m;
the shared parts are fused by a product of experts.

Codes are laid out as in mmvae_plus: every modality encodes to [z, w_m] (latent_dim +
private_dim) and decodes from [z, w_m]. With q_m(z|x_m) the shared part of modality m's
posterior, q_S(z) the product of experts of the present q_m with the prior expert N(0, I) (as
in MultiVae's code) and q_m(w_m|x_m) the private part, every shared posterior q in
{q_S, q_1, ..., q_M} (the unimodal ones as they are, without the prior expert) gives an ELBO
that reconstructs each present modality n from (z ~ q, its own private w_n ~ q_n(w_n|x_n),
drawn afresh for each ELBO):
  ELBO(q) = sum_n log p(x_n | z, w_n) - beta * [KL(q || N(0, I)) + sum_n KL(q_n(w_n|x_n) || N(0, I))]
  objective = ELBO(q_S) + sum_m ELBO(q_m)
the unimodal ELBOs counting only where x_m is present.
loss = -objective averaged over the examples with at least one modality, so missing modalities
are handled: they leave the product, the reconstructions and the private KL terms.

User API: the latent from `encode`, `fuse`, `draw` and `prior_sample` is the shared z. As in
mmvae_plus, `decode` appends a private code to shared codes, drawn from the private prior,
here the fixed N(0, I) (its mean with `generate(..., mean=True)`), and `reconstruct` uses
each present modality's own private posterior mean.
"""
from __future__ import annotations

from typing import Literal

import torch

from omnivae.batch import Batch, LossOutput
from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian, masked_mean
from omnivae.fusion import product_of_experts
from omnivae.models.base import ModelConfig
from omnivae.models.mmvae_plus import MMVAEPlus
from omnivae.models.registry import register_model


class DMVAEConfig(ModelConfig):
    model: Literal["dmvae"] = "dmvae"
    private_dim: PositiveInt = 4  # size of each modality's private code w_m


class DMVAE(MMVAEPlus):
    about = "multimodal VAE with private and product-of-experts shared latents"
    paper = "Lee & Pavlovic 2021, Private-shared disentangled multimodal VAE for learning of latent representations"
    config_class = DMVAEConfig

    def __init__(self, config, modalities=None):
        # not MMVAEPlus.__init__: the private prior is not learned; its log-scale is a fixed zero
        # buffer, so the private draws of mmvae_plus's methods come from N(0, I)
        super(MMVAEPlus, self).__init__(config, modalities)
        self.register_buffer("private_log_scale", torch.zeros(len(self.names), config.private_dim),
                             persistent=False)

    def fuse(self, mu, logvar, present) -> Gaussian:
        d = self.config.latent_dim
        return product_of_experts(mu[..., :d], logvar[..., :d], present.unsqueeze(0), prior_expert=True)[0]

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        return self.fuse(mu, logvar, present).rsample(n)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        d = self.config.latent_dim
        mu, logvar, present = self.encode_unimodal(batch)  # [M,B,W], [M,B]
        joint = self.fuse(mu, logvar, present)
        q = Gaussian(torch.cat([joint.mu[None], mu[..., :d]]), torch.cat([joint.logvar[None], logvar[..., :d]]))
        z = q.rsample()  # [1+M,B,D]: from q_S, then each q_m
        private = Gaussian(mu[..., d:], logvar[..., d:])
        w = private.rsample(len(z))  # [1+M,M,B,P]: fresh private draws for every ELBO
        rec = torch.zeros_like(z[..., 0])
        for i, name in enumerate(self.names):
            if name in batch.data:
                rec = rec + self.log_likelihoods(torch.cat([z, w[:, i]], -1), batch, [name])[name]
        presentf = present.to(mu.dtype)
        kl_private = (private.kl_standard() * presentf).sum(0)  # [B]
        kl = q.kl_standard() + kl_private  # [1+M,B]
        counted = torch.cat([torch.ones_like(presentf[:1]), presentf])  # the unimodal ELBOs where x_m is there
        rec, kl = (rec * counted).sum(0), (kl * counted).sum(0)
        valid = present.any(0)
        rec_mean, kl_mean = masked_mean(rec, valid), masked_mean(kl, valid)
        total = -(rec_mean - self.config.beta * beta_scale * kl_mean)
        return LossOutput(total, {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach()})


register_model("dmvae", DMVAE)
