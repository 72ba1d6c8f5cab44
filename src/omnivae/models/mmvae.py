"""MMVAE (Shi, Siddharth, Paige & Torr 2019): mixture-of-experts posterior, trained with
stratified ELBO, IWAE or DReG-IWAE estimators.

For every present modality m and K draws z ~ q_m(z|x_m):
  log w = sum_n log p(x_n|z) + beta * (log p(z) - log (1/M) sum_m' q_m'(z|x_m'))
elbo: mean_k log w; iwae: logmeanexp_k log w; dreg: IWAE with doubly reparameterised
gradients (Tucker et al. 2019). The loss averages over the present modalities m.
All M*K*B codes pass through each decoder in one call.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from omnivae.batch import Batch, LossOutput
from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian, log_standard_normal
from omnivae.fusion import mixture_log_prob, moment_matched_mixture, sample_mixture
from omnivae.models.base import ModelConfig, MultimodalModel


class MMVAEConfig(ModelConfig):
    model: Literal["mmvae"] = "mmvae"
    k: PositiveInt = 1  # importance samples per modality (>= 1)
    estimator: Literal["elbo", "iwae", "dreg"] = "elbo"


class MMVAE(MultimodalModel):
    about = "multimodal VAE, mixture of experts"
    paper = "Shi et al. 2019, Variational mixture-of-experts autoencoders for multi-modal deep generative models"
    config_class = MMVAEConfig

    def fuse(self, mu, logvar, present) -> Gaussian:
        """Moment-matched Gaussian of the mixture (its mean is the embedding)."""
        return moment_matched_mixture(mu, logvar, present)

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        """Draws from the mixture of the present posteriors; an example with no modality
        present draws from the prior N(0, I), as `fuse` returns it (its components are set
        to N(0, I) there, so no placeholder encoding is ever sampled)."""
        none = ~present.any(0).view(1, -1, 1)  # [1,B,1]
        mu, logvar = mu.masked_fill(none, 0.0), logvar.masked_fill(none, 0.0)
        return torch.stack([sample_mixture(mu, logvar, present) for _ in range(n)])

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        cfg = self.config
        mu, logvar, present = self.encode_unimodal(batch)
        m, b, d = mu.shape
        eps = torch.randn(m, cfg.k, b, d, dtype=mu.dtype, device=mu.device)
        z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)  # [M,K,B,D]
        lls = self.log_likelihoods(z.reshape(m * cfg.k, b, d), batch)
        rec = torch.stack(list(lls.values())).sum(0).view(m, cfg.k, b)
        if cfg.estimator == "dreg":  # score-function-free: q's parameters are cut from the graph
            mu_q, logvar_q = mu.detach(), logvar.detach()
        else:
            mu_q, logvar_q = mu, logvar
        log_q = mixture_log_prob(z, mu_q, logvar_q, present)  # [M,K,B]
        log_p = log_standard_normal(z)
        beta = cfg.beta * beta_scale
        log_w = rec + beta * (log_p - log_q)
        presentf = present.to(mu.dtype)
        count = presentf.sum(0).clamp_min(1.0)  # [B]
        if cfg.estimator == "elbo":
            per_m = log_w.mean(1)
        elif cfg.estimator == "iwae":
            per_m = torch.logsumexp(log_w, 1) - math.log(cfg.k)
        else:
            with torch.no_grad():
                weights = torch.softmax(log_w, 1)  # [M,K,B], normalised in log space
            if z.requires_grad:
                z.register_hook(lambda g: weights.unsqueeze(-1) * g)
            surrogate = (weights * log_w).sum(1)  # carries the DReG gradients
            bound = torch.logsumexp(log_w.detach(), 1) - math.log(cfg.k)
            per_m = surrogate + (bound - surrogate).detach()  # value: the IWAE bound
        objective = ((per_m * presentf).sum(0) / count).mean()
        total = -objective
        kl_proxy = ((log_q - log_p).mean(1) * presentf).sum(0) / count
        return LossOutput(total, {"loss": total.detach(), "rec": ((rec.mean(1) * presentf).sum(0) / count).mean().detach(),
                                  "kl": kl_proxy.mean().detach()})
