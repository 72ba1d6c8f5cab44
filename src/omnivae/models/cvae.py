"""Conditional VAE (Sohn, Lee & Yan 2015, "Learning structured output representation using
deep conditional generative models"): generate one `target` modality given `conditions`.

loss = -[E_q(z|x_t,c) log p(x_t | z, c) - beta * KL(q(z|x_t,c) || N(0, I))]
averaged over the examples holding the target and at least one condition.

Condition embedding c (condition_dim): every modality encodes to latent_dim +
condition_dim numbers; c is the product of experts (no prior expert) of the last
condition_dim coordinates of the present conditions' posteriors, taken at its mean. It is
not detached by default, so the condition encoders learn through the target's
reconstruction (detach_condition cuts that path). q(z | x_t, c) is a small MLP over the
target encoder's (mu, logvar) and c; the target decoder reads [z, c] (latent_dim +
condition_dim); the prior is N(0, I). The conditions' own decoders are not used.

User API: `generate(batch, given=conditions, targets=[target])` draws z from the prior
(z = 0 with mean=True) and decodes with the conditions' embedding; `encode` is the
posterior mean where x_t is given, else the prior mean; `decode` takes full codes
[z, c]; `sample` has no conditions to use and raises.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import field_validator, model_validator

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, clamp_logvar, masked_mean
from omnivae.errors import InputError
from omnivae.fusion import product_of_experts
from omnivae.modalities.base import mlp
from omnivae.models.registry import register_model
from omnivae.models.base import ModelConfig, MultimodalModel, check_count


class CVAEConfig(ModelConfig):
    model: Literal["cvae"] = "cvae"
    target: str | None = None  # the generated modality; default: the first one in `modalities`
    conditions: list[str] | None = None  # default: every other modality
    condition_dim: int | None = None  # size of the condition embedding; default: latent_dim
    hidden: list[int] = [64]  # hidden widths of the q(z | x_target, c) MLP
    detach_condition: bool = False  # stop the target loss from training the condition encoders

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Write the defaults out, so a saved config names its target and conditions."""
        if not isinstance(data, dict) or not isinstance(data.get("modalities"), dict):
            return data
        data, names = dict(data), list(data["modalities"])
        if data.get("target") is None and names:
            data["target"] = names[0]
        if data.get("conditions") is None:
            data["conditions"] = [n for n in names if n != data["target"]]
        if data.get("condition_dim") is None:
            data["condition_dim"] = data.get("latent_dim", cls.model_fields["latent_dim"].default)
        return data

    @field_validator("condition_dim")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"condition_dim must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _check_roles(self) -> "CVAEConfig":
        names = list(self.modalities)
        if self.target not in names:
            raise ValueError(f"target {self.target!r} is not a modality of this model; it has {names}")
        unknown = [c for c in self.conditions or [] if c not in names]
        if unknown:
            raise ValueError(f"conditions {unknown} are not modalities of this model; it has {names}")
        if self.target in (self.conditions or []):
            raise ValueError(f"target {self.target!r} cannot also be a condition")
        if not self.conditions or len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions must name at least one modality, each once, got {self.conditions}")
        return self


class CVAE(MultimodalModel):
    about = "conditional VAE (one modality generated given the others)"
    paper = "Sohn et al. 2015, Learning structured output representation using deep conditional generative models"
    config_class = CVAEConfig
    supports_conditional_prior = False  # its codes are decoded with the conditions' embedding

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        width = self.modality_latent_dim(config)
        self.posterior_net = mlp([2 * width + config.condition_dim, *config.hidden, 2 * config.latent_dim])
        self.target_index = self.names.index(config.target)
        self.condition_index = [self.names.index(c) for c in config.conditions]

    @classmethod
    def modality_latent_dim(cls, config: CVAEConfig) -> int:
        return config.latent_dim + config.condition_dim

    def condition_embedding(self, mu, logvar, present) -> torch.Tensor:
        """c [B, condition_dim]: PoE mean of the present conditions (0 where none is)."""
        d, idx = self.config.latent_dim, self.condition_index
        c = product_of_experts(mu[idx, :, d:], logvar[idx, :, d:], present[idx].unsqueeze(0), prior_expert=False)[0].mu
        return c.detach() if self.config.detach_condition else c

    def posterior(self, mu, logvar, present) -> tuple[Gaussian, torch.Tensor]:
        """(q(z | x_target, c) [B,D], c [B,C]) from the unimodal parameters [M,B,W]."""
        t, c = self.target_index, self.condition_embedding(mu, logvar, present)
        q_mu, q_logvar = self.posterior_net(torch.cat([mu[t], logvar[t], c], -1)).chunk(2, -1)
        return Gaussian(q_mu, clamp_logvar(q_logvar)), c

    def adversarial_problem(self, name: str) -> str | None:
        if name != self.config.target:
            return f"cvae only generates its target {self.config.target!r}, not {name!r}"
        return None

    def decoder_codes(self, name, z, mu, logvar, present, from_prior: bool = False) -> torch.Tensor:
        """[z, c]: the target decoder also reads the conditions' embedding."""
        return torch.cat([z, self.condition_embedding(mu, logvar, present)], -1)

    def fuse(self, mu, logvar, present) -> Gaussian:
        q, _ = self.posterior(mu, logvar, present)
        none = ~present[self.target_index].unsqueeze(-1)  # no target: the prior N(0, I)
        return Gaussian(q.mu.masked_fill(none, 0.0), q.logvar.masked_fill(none, 0.0))

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        target = self.config.target
        if target not in batch.data:
            raise InputError(f"cvae's loss needs its target modality {target!r} in the batch; "
                             f"it holds {list(batch.data)}")
        mu, logvar, present = self.encode_unimodal(batch)
        q, c = self.posterior(mu, logvar, present)
        code = torch.cat([q.rsample(1), c.unsqueeze(0)], -1)  # [1,B,D+C]
        rec = self.log_likelihoods(code, batch, [target])[target][0]
        kl = q.kl_standard()
        valid = present[self.target_index] & present[self.condition_index].any(0)
        rec_mean, kl_mean = masked_mean(rec, valid), masked_mean(kl, valid)
        total = -(rec_mean - self.config.beta * beta_scale * kl_mean)
        return LossOutput(total, {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach()})

    # -- user API: the target is only generated given the conditions -----------------------
    def _check_targets(self, targets) -> list[str]:
        targets = [self.config.target] if targets is None else self.check_names(targets, "targets")
        wrong = [t for t in targets if t != self.config.target]
        if wrong:
            raise InputError(f"cvae only generates its target {self.config.target!r}; {wrong} are conditions "
                             "(train another cvae with them as target)")
        return targets

    @torch.no_grad()
    def generate(self, batch, given=None, targets=None, n: int = 1, mean: bool = False, mask=None,
                 raw: bool = False, **options):
        """The target from the conditions: z ~ N(0, I) (z = 0 with mean=True), decoded with c."""
        check_count(n)
        batch = self.as_batch(batch, mask)
        given, targets = self._given(batch, given), self._check_targets(targets)
        missing = [c for c in self.config.conditions if c not in given]
        if missing:
            raise InputError(f"cvae generates {self.config.target!r} given all of its conditions "
                             f"{self.config.conditions}; given={given} misses {missing}")
        mu, logvar, present = self.encode_unimodal(batch, self.config.conditions)
        c = self.condition_embedding(mu, logvar, present)  # [B,C]
        z = c.new_zeros(n, len(c), self.config.latent_dim)
        if not mean:
            z.normal_()
        code = torch.cat([z, c.expand(n, -1, -1)], -1)
        return self.decode(code[0] if n == 1 else code, targets, raw=raw, **options)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, targets=None, raw: bool = False, **options):
        """Full codes [z, c] ([n,B,D+C] or [B,D+C]) -> {target: output}."""
        width = self.modality_latent_dim(self.config)
        if z.shape[-1] != width:
            raise InputError(f"cvae decodes codes [z, condition embedding] of size {width}, got shape "
                             f"{list(z.shape)}; use generate(batch, given=conditions)")
        return super().decode(z, self._check_targets(targets), raw=raw, **options)

    @torch.no_grad()
    def reconstruct(self, batch, mask=None, raw: bool = False, **options):
        """The target from its posterior mean given x_target and the conditions."""
        batch = self.as_batch(batch, mask)
        mu, logvar, present = self.encode_unimodal(batch, self._given(batch, None))
        z, c = self.fuse(mu, logvar, present).mu, self.condition_embedding(mu, logvar, present)
        return self.decode(torch.cat([z, c], -1), raw=raw, **options)

    def sample(self, n: int, targets=None, raw: bool = False, **options):
        raise InputError(f"cvae has no unconditional samples; use generate(batch, given={self.config.conditions}, "
                         f"targets=[{self.config.target!r}])")


register_model("cvae", CVAE)
