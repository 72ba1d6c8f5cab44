"""VAE and beta-VAE (Kingma & Welling 2014; Higgins et al. 2017) on one modality.

loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I))
With free_bits > 0 the KL term becomes sum_d max(free_bits, batch-mean KL_d); "kl" logs the true KL.
"""
from __future__ import annotations

from typing import Literal

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import kl_objective, masked_mean
from omnivae.errors import ConfigError
from omnivae.models.base import ModelConfig, MultimodalModel


class VAEConfig(ModelConfig):
    model: Literal["vae"] = "vae"


class VAE(MultimodalModel):
    about = "variational autoencoder (beta-VAE with beta)"
    paper = "Kingma & Welling 2014, Auto-encoding variational Bayes; Higgins et al. 2017 (beta-VAE)"
    config_class = VAEConfig
    supports_free_bits = True

    def check_config(self) -> None:
        if len(self.names) != 1:
            raise ConfigError(f"model 'vae' takes exactly one modality, got {self.names}; "
                              "use mvae, mmvae or mopoe for several")

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        name = self.names[0]
        q = self.modalities[name].encode(batch.data[name])
        z = q.rsample(1)
        rec = self.log_likelihoods(z, batch)[name][0]
        kl = q.kl_standard()
        present = batch.mask.get(name)  # None: every example has the modality
        rec_mean, kl_mean = masked_mean(rec, present), masked_mean(kl, present)
        if self.config.free_bits > 0:
            kl_term = masked_mean(kl_objective(q, batch.present(name), self.config.free_bits), present)
        else:
            kl_term = kl_mean
        total = -(rec_mean - self.config.beta * beta_scale * kl_term)
        return LossOutput(total, {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach()})
