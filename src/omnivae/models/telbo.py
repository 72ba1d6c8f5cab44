"""TELBO (Vedantam, Fischer, Huang & Murphy 2018, "Generative models of visually grounded
imagination"): the triple ELBO, a joint ELBO plus one ELBO per modality from its own encoder.

  objective = ELBO(X; q(z|X)) + sum_m ELBO(x_m; q_m(z|x_m))
  ELBO(X; q(z|X))     = E_q(z|X) sum_m log p(x_m|z) - beta * KL(q(z|X) || N(0, I))
  ELBO(x_m; q_m)      = E_q_m(z|x_m) log p(x_m|z)   - beta * KL(q_m(z|x_m) || N(0, I))
where the unimodal ELBOs train only the unimodal encoders: they score x_m with the decoder's
parameters (and any other likelihood parameter, e.g. an image's noise scale) cut from the
graph, so the decoders p(x_m|z) learn from the joint ELBO alone (the paper's stop-gradient;
MultiVae instead trains the two parts one after the other). loss = -objective averaged over
the examples with at least one modality.

Joint posterior: q(z|X) is a joint inference network of its own over the raw inputs of every
modality, built as jmvae's (each modality has a feature network of its encoder's architecture
with `joint_features` outputs; the ReLU'd features are concatenated and an MLP `joint_hidden`
maps them to (mu, logvar)). Inference uses it where every modality is given, otherwise the
product of the given unimodal posteriors without a prior expert (one given modality: its own
posterior), exactly as jmvae does.

Missing data: the joint ELBO needs every modality, so it counts only on complete examples;
each unimodal ELBO counts where its modality is present.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, masked_mean
from omnivae.errors import ConfigError
from omnivae.models.jmvae import JMVAE, JointEncoderConfig
from omnivae.models.registry import register_model


class TELBOConfig(JointEncoderConfig):
    model: Literal["telbo"] = "telbo"


class FrozenLikelihood(nn.Module):
    """log p(x|z) of a modality with its generative parameters (all but the encoder's) detached:
    gradients reach z, never the decoder."""

    def __init__(self, modality: nn.Module):
        super().__init__()
        self.modality = modality

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.modality.log_likelihood(z, x)

    def score(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        detached = {f"modality.{n}": p.detach() for n, p in self.modality.named_parameters()
                    if not n.startswith("encoder.")}
        return torch.func.functional_call(self, detached, (z, x))


class TELBO(JMVAE):
    about = "triple-ELBO multimodal VAE (joint + unimodal ELBOs, joint inference network)"
    paper = "Vedantam et al. 2018, Generative models of visually grounded imagination"
    config_class = TELBOConfig

    def check_config(self) -> None:
        if len(self.names) < 2:
            raise ConfigError(f"model 'telbo' needs at least two modalities, got {self.names}; use vae for one")

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = super(JMVAE, self).encode_unimodal(batch)  # the unimodal posteriors only
        complete = present.all(0)  # [B]
        q = self.joint_posterior(batch)
        lls = self.log_likelihoods(q.rsample(1), batch)
        rec_joint = torch.stack(list(lls.values())).sum(0)[0] * complete  # [B]
        kl_joint = q.kl_standard() * complete
        uni = Gaussian(mu, logvar)
        z = uni.rsample()  # [M,B,D]
        presentf = present.to(mu.dtype)
        rec_uni = torch.zeros_like(rec_joint)
        for i, name in enumerate(self.names):
            if name in batch.data:
                mod = self.modalities[name]
                ll = FrozenLikelihood(mod).score(z[i].unsqueeze(0), batch.data[name])[0] * mod.spec.weight
                rec_uni = rec_uni + ll * presentf[i]
        kl_uni = (uni.kl_standard() * presentf).sum(0)
        valid = present.any(0)
        rec, kl = masked_mean(rec_joint + rec_uni, valid), masked_mean(kl_joint + kl_uni, valid)
        total = -(rec - self.config.beta * beta_scale * kl)
        return LossOutput(total, {"loss": total.detach(), "rec": rec.detach(), "kl": kl.detach(),
                                  "rec_joint": masked_mean(rec_joint, valid).detach(),
                                  "complete": complete.to(rec.dtype).mean().detach()})


register_model("telbo", TELBO)
