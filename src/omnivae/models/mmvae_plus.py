"""MMVAE+ (Palumbo, Daunhawer & Vogt 2023, "MMVAE+: Enhancing the generative quality of
multimodal VAEs without compromises"): a mixture-of-experts shared code z plus a private
code w_m per modality.

Every modality encodes to [z, w_m] (latent_dim + private_dim) and decodes from [z, w_n].
For every present modality m and K draws (z, w_m) ~ q_m(z, w_m | x_m):
  w~_n    = w_m if n == m, else a draw from the auxiliary prior r_n(w) = N(0, s_n^2 I)
  log W   = sum_n log p(x_n | z, w~_n)
            + beta * (log p(z, w_m) - log (1/M) sum_m' q_m'(z|x_m') - log q_m(w_m|x_m))
with p = N(0, I); the importance weights only mix the shared part. elbo: mean_k log W;
iwae: logmeanexp_k log W; dreg: the IWAE value with doubly reparameterised gradients.
The loss averages over the present modalities m, then over the examples. s_n starts at
private_prior_scale and is learned (through the reparameterised cross reconstructions)
when learn_private_prior is set. Gaussians replace the paper's Laplace posteriors.

User API: the latent from `encode`, `fuse`, `draw` and `prior_sample` is the shared z
(latent_dim); `decode` appends private codes drawn from r_n for every target (codes of
the full width latent_dim + private_dim pass through unchanged), so cross generation
keeps the shared code of the given modalities and varies the private details
(`generate(..., mean=True)` uses r_n's mean instead and is deterministic).
`reconstruct` uses each present modality's own private posterior mean.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import field_validator
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, log_normal, log_standard_normal, masked_mean
from omnivae.errors import InputError
from omnivae.fusion import mixture_log_prob
from omnivae.models.registry import register_model
from omnivae.models.base import ModelConfig
from omnivae.models.mmvae import MMVAE


class MMVAEPlusConfig(ModelConfig):
    model: Literal["mmvae_plus"] = "mmvae_plus"
    private_dim: int = 4  # size of each modality's private code w_m
    private_prior_scale: float = 1.0  # (initial) std of the auxiliary prior r(w)
    learn_private_prior: bool = True  # learn one std per modality and private dim
    k: int = 1  # importance samples per modality
    estimator: Literal["elbo", "iwae", "dreg"] = "elbo"

    @field_validator("private_dim", "k")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("private_prior_scale")
    @classmethod
    def _positive_scale(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"private_prior_scale must be > 0, got {v}")
        return v


class MMVAEPlus(MMVAE):
    about = "MMVAE+ with modality-private latents"
    paper = "Palumbo et al. 2023, MMVAE+: enhancing the generative quality of multimodal VAEs without compromises"
    config_class = MMVAEPlusConfig

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        log_scale = torch.full((len(self.names), config.private_dim), math.log(config.private_prior_scale))
        self.private_log_scale = nn.Parameter(log_scale, requires_grad=config.learn_private_prior)

    @classmethod
    def modality_latent_dim(cls, config: MMVAEPlusConfig) -> int:
        return config.latent_dim + config.private_dim

    def private_prior_draw(self, i: int, lead: tuple[int, ...]) -> torch.Tensor:
        """Reparameterised draws [*lead, private_dim] from modality i's auxiliary prior r_i(w)."""
        scale = self.private_log_scale[i].exp()
        return torch.randn(*lead, scale.shape[0], dtype=scale.dtype, device=scale.device) * scale

    def shared_log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of shared codes z [...,latent_dim] -> [...]: N(0, I) (cmvae: a mixture)."""
        return log_standard_normal(z)

    def decoder_codes(self, name, z, mu, logvar, present, from_prior: bool = False) -> torch.Tensor:
        """[z, w_n]: w_n a draw from modality n's private posterior where x_n is present (and z
        comes from the posteriors), else from its auxiliary prior r_n."""
        i, d = self.names.index(name), self.config.latent_dim
        if from_prior:
            return torch.cat([z, self.private_prior_draw(i, (len(z),))], -1)
        w_q = mu[i, :, d:] + torch.randn_like(mu[i, :, d:]) * torch.exp(0.5 * logvar[i, :, d:])
        w = torch.where(present[i].unsqueeze(-1), w_q, self.private_prior_draw(i, (len(z),)))
        return torch.cat([z, w], -1)

    # -- the shared code is the user-facing latent -------------------------------------------
    def fuse(self, mu, logvar, present) -> Gaussian:
        d = self.config.latent_dim
        return super().fuse(mu[..., :d], logvar[..., :d], present)

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        d = self.config.latent_dim
        return super().draw(mu[..., :d], logvar[..., :d], present, n)

    def full_code(self, mu, logvar, present) -> torch.Tensor:
        """[shared joint mean, every modality's private mean] [B, latent_dim + M*private_dim]."""
        d = self.config.latent_dim
        return torch.cat([self.fuse(mu, logvar, present).mu, *(mu[i, :, d:] for i in range(len(self.names)))], -1)

    def full_code_dim(self) -> int:
        return self.config.latent_dim + len(self.names) * self.config.private_dim

    def decode_full_code(self, code: torch.Tensor, targets, raw: bool = False, **options):
        d, p = self.config.latent_dim, self.config.private_dim
        out = {}
        for name in targets or self.names:
            i = self.names.index(name)
            own = torch.cat([code[..., :d], code[..., d + i * p:d + (i + 1) * p]], -1)
            out.update(self.decode(own, [name], raw=raw, **options))
        return out

    @torch.no_grad()
    def generate(self, batch, given=None, targets=None, n: int = 1, mean: bool = False, mask=None,
                 raw: bool = False, **options):
        """As MultimodalModel.generate; mean=True also takes the private codes at r_n's mean
        (0), so the output is deterministic (pass private_mean=False to vary them)."""
        options.setdefault("private_mean", mean)
        return super().generate(batch, given, targets, n, mean, mask, raw, **options)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, targets=None, raw: bool = False, private_mean: bool = False, **options):
        """Shared codes [n,B,latent_dim] (or [B,latent_dim]) get private codes drawn from r_n
        per target (its mean 0 with private_mean); full codes [..., latent_dim + private_dim]
        are decoded as they are."""
        d, width = self.config.latent_dim, self.modality_latent_dim(self.config)
        if z.shape[-1] == width:
            return super().decode(z, targets, raw=raw, **options)
        if z.shape[-1] != d:
            raise InputError(f"mmvae_plus decodes shared codes of size {d} or full codes of size {width}, "
                             f"got shape {list(z.shape)}")
        out = {}
        for name in targets or self.names:
            w = self.private_prior_draw(self.names.index(name), tuple(z.shape[:-1]))
            w = torch.zeros_like(w) if private_mean else w
            out.update(super().decode(torch.cat([z, w], -1), [name], raw=raw, **options))
        return out

    @torch.no_grad()
    def reconstruct(self, batch, mask=None, raw: bool = False, **options):
        """Every modality from the shared mean of the given ones plus its own private
        posterior mean (a draw from r_n where x_n is missing)."""
        batch = self.as_batch(batch, mask)
        d = self.config.latent_dim
        mu, logvar, present = self.encode_unimodal(batch, self._given(batch, None))
        shared = self.fuse(mu, logvar, present).mu
        out = {}
        for i, name in enumerate(self.names):
            w = torch.where(present[i].unsqueeze(-1), mu[i, :, d:], self.private_prior_draw(i, (len(shared),)))
            out.update(self.decode(torch.cat([shared, w], -1), [name], raw=raw, **options))
        return out

    # -- the objective ---------------------------------------------------------------------
    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        cfg, d = self.config, self.config.latent_dim
        mu, logvar, present = self.encode_unimodal(batch)  # [M,B,W], [M,B]
        m, b, width = mu.shape
        eps = torch.randn(m, cfg.k, b, width, dtype=mu.dtype, device=mu.device)
        codes = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)  # [M,K,B,W] = [z, w_m]
        shared, private = codes[..., :d], codes[..., d:]
        rec = torch.zeros_like(codes[..., 0])
        for n, name in enumerate(self.names):  # decoder n sees w_n from q_n for m == n, else from r_n
            own = (torch.arange(m, device=mu.device) == n).view(m, 1, 1, 1)
            w = torch.where(own, private, self.private_prior_draw(n, (m, cfg.k, b)))
            lls = self.log_likelihoods(torch.cat([shared, w], -1).reshape(m * cfg.k, b, width), batch, [name])
            if name in lls:
                rec = rec + lls[name].view(m, cfg.k, b)
        q_mu, q_logvar = (mu.detach(), logvar.detach()) if cfg.estimator == "dreg" else (mu, logvar)
        any_present = present.any(0)
        log_q = mixture_log_prob(shared, q_mu[..., :d], q_logvar[..., :d], present) \
            + log_normal(private, q_mu[..., d:].unsqueeze(1), q_logvar[..., d:].unsqueeze(1))  # [M,K,B]
        log_p = self.shared_log_prior(shared) + log_standard_normal(private)
        log_w = rec + cfg.beta * beta_scale * (log_p - log_q)
        presentf = present.to(mu.dtype)
        count = presentf.sum(0).clamp_min(1.0)

        def over_modalities(v: torch.Tensor) -> torch.Tensor:  # [M,B] -> [] (mean over present m, rows)
            return masked_mean((v * presentf).sum(0) / count, any_present)

        if cfg.estimator == "elbo":
            objective = over_modalities(log_w.mean(1))
        else:
            bound = over_modalities(torch.logsumexp(log_w, 1) - math.log(cfg.k))
            if cfg.estimator == "dreg":
                weights = torch.softmax(log_w.detach(), 1)  # [M,K,B]
                if codes.requires_grad:
                    codes.register_hook(lambda g: weights.unsqueeze(-1) * g)
                surrogate = over_modalities((weights * log_w).sum(1))
                objective = bound.detach() + surrogate - surrogate.detach()  # value: the bound
            else:
                objective = bound
        total = -objective
        return LossOutput(total, {"loss": total.detach(), "rec": over_modalities(rec.mean(1)).detach(),
                                  "kl": over_modalities((log_q - log_p).mean(1)).detach()})


register_model("mmvae_plus", MMVAEPlus)
