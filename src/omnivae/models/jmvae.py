"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016, "Joint multimodal learning with deep
generative models"): a joint encoder q(z|X) plus unimodal encoders q_m(z|x_m) that are
pulled towards it.

loss = -[E_q(z|X) sum_m log p(x_m|z) - beta * KL(q(z|X) || N(0, I))]
       + alpha * sum_m KL(q(z|X) || q_m(z|x_m))
averaged over the complete examples (every modality present).

Joint encoder: an MLP over the concatenated unimodal posterior parameters (mu, logvar of
every modality), so each encoder still runs once and no second set of per-modality
networks is needed. Missing data: the objective is only defined on complete examples, so
incomplete rows are left out of every term (a batch with no complete row gives a zero
loss). Inference (`fuse`): the joint encoder for complete rows, otherwise the product of
the given unimodal posteriors without a prior expert (a single one is used as it is).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import field_validator

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, clamp_logvar
from omnivae.errors import ConfigError
from omnivae.fusion import product_of_experts
from omnivae.modalities.base import mlp
from omnivae.models.registry import register_model
from omnivae.models.ae import masked_mean
from omnivae.models.base import ModelConfig, MultimodalModel


def kl_normal(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
              logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) of diagonal Gaussians, summed over the last
    dim (arguments broadcast against each other)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p)
                  - 1.0).sum(-1)


class JMVAEConfig(ModelConfig):
    model: Literal["jmvae"] = "jmvae"
    alpha: float = 0.1  # weight of sum_m KL(q(z|X) || q_m(z|x_m))
    joint_hidden: list[int] = [128]  # hidden widths of the joint encoder MLP

    @field_validator("alpha")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"alpha must be >= 0, got {v}")
        return v


class JMVAE(MultimodalModel):
    config_class = JMVAEConfig

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        m, d = len(self.names), config.latent_dim
        self.joint_encoder = mlp([2 * m * d, *config.joint_hidden, 2 * d])

    def check_config(self) -> None:
        if len(self.names) < 2:
            raise ConfigError(f"model 'jmvae' needs at least two modalities, got {self.names}; use vae for one")

    def joint_posterior(self, mu: torch.Tensor, logvar: torch.Tensor) -> Gaussian:
        """q(z|X) [B,D] from the unimodal parameters [M,B,D] of all modalities."""
        flat = torch.cat([mu, logvar], -1).transpose(0, 1).reshape(mu.shape[1], -1)  # [B, M*2D]
        j_mu, j_logvar = self.joint_encoder(flat).chunk(2, -1)
        return Gaussian(j_mu, clamp_logvar(j_logvar))

    def fuse(self, mu, logvar, present) -> Gaussian:
        joint = self.joint_posterior(mu, logvar)
        poe = product_of_experts(mu, logvar, present.unsqueeze(0), prior_expert=False)[0]
        complete = present.all(0).unsqueeze(-1)  # [B,1]
        return Gaussian(torch.where(complete, joint.mu, poe.mu), torch.where(complete, joint.logvar, poe.logvar))

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = self.encode_unimodal(batch)
        complete = present.all(0)  # [B]
        q = self.joint_posterior(mu, logvar)
        z = q.rsample(1)  # [1,B,D]
        rec = torch.stack(list(self.log_likelihoods(z, batch).values())).sum(0)[0]  # [B]
        kl = q.kl_standard()
        kl_uni = kl_normal(q.mu, q.logvar, mu, logvar).sum(0)  # [B]: sum over modalities
        rec_mean, kl_mean, kl_uni_mean = (masked_mean(v, complete) for v in (rec, kl, kl_uni))
        total = -(rec_mean - self.config.beta * beta_scale * kl_mean) + self.config.alpha * kl_uni_mean
        return LossOutput(total, {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach(),
                                  "kl_unimodal": kl_uni_mean.detach(),
                                  "complete": complete.to(rec.dtype).mean().detach()})


register_model("jmvae", JMVAE)
