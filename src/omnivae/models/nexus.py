"""Nexus (Vasco, Yin, Melo & Paiva 2022, "Leveraging hierarchy in multimodal generative models
for effective cross-modality inference"): a VAE per modality, and above them a "nexus" latent z
inferred from messages of the modality latents.

Bottom level, per present modality m, with z_m ~ q(z_m|x_m):
  ELBO_m = w_m log p(x_m|z_m) - modality_beta * KL(q(z_m|x_m) || N(0, I))
Top level, with messages msg_m = Linear_m(z_m) (z_m detached), their mean over the modalities
the nexus sees (modality dropout, see omnivae.models.hierarchical) giving q(z | msgs), z ~ it,
and g_m(z) the top-down network of modality m:
  ELBO_top = -gamma * sum_m ||z_m - g_m(z)||^2 - beta * KL(q(z | msgs) || N(0, I))
loss = -(sum_m ELBO_m + ELBO_top), averaged over the examples with at least one modality; the
squared error runs over every present modality (the dropped ones too), w_m is the modality's
likelihood weight, and beta_scale (KL warm-up) multiplies both KL weights. As in the authors'
code, the top level reads and rebuilds detached z_m, so it never trains the modality VAEs, and
its reconstruction is a plain squared error (a unit-variance Gaussian up to scale and constant).

User API: `encode` returns the nexus latent z (see omnivae.models.hierarchical): messages from
the means of the given modalities' posteriors. Cross-modal generation goes x_given -> z_m ->
messages -> z -> g_target(z) -> x_target.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.config import NonNegativeFloat, PositiveInt
from omnivae.distributions import Gaussian, masked_mean
from omnivae.modalities.base import mlp
from omnivae.models.hierarchical import HierarchicalConfig, HierarchicalModel, gaussian_head
from omnivae.models.registry import register_model


class NexusConfig(HierarchicalConfig):
    model: Literal["nexus"] = "nexus"
    message_dim: PositiveInt = 16  # size of each modality's message to the nexus
    modality_beta: NonNegativeFloat = 1.0  # weight of the modality KL terms (beta weighs the nexus KL)
    # weight of the nexus's squared error on the modality latents. That error is a unit-variance
    # Gaussian, far broader than the modality posteriors, so at 1.0 the nexus KL outweighs details
    # the decoders read: shapes medium (25 epochs) image->caption 0.908 at seeds 0 and 2, the colour
    # lost; 0.994-1.0 both ways at 3 for seeds 0-2 (docs/models.md, with the partial level and
    # PolyMNIST-5). The authors' MNIST setup weighs the label's error 50 and the image's 1.
    gamma: NonNegativeFloat = 3.0


class Nexus(HierarchicalModel):
    about = "hierarchical multimodal VAE with a nexus latent over modality VAEs"
    paper = ("Vasco et al. 2022, Leveraging hierarchy in multimodal generative models for effective "
             "cross-modality inference")
    config_class = NexusConfig

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        self.messages = nn.ModuleDict({n: nn.Linear(config.modality_dim, config.message_dim) for n in self.names})
        self.nexus_encoder = mlp([config.message_dim, *config.hidden, 2 * config.latent_dim])

    def top_posterior(self, z_m: torch.Tensor, seen: torch.Tensor) -> Gaussian:
        """q(z | mean of the seen modalities' messages)."""
        msgs = torch.stack([self.messages[n](z_m[i]) for i, n in enumerate(self.names)])  # [M,B,msg]
        w = seen.to(msgs.dtype).unsqueeze(-1)
        mean = (msgs * w).sum(0) / w.sum(0).clamp_min(1.0)
        return gaussian_head(self.nexus_encoder, mean)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        cfg = self.config
        mu, logvar, present = self.encode_unimodal(batch)
        q_m = Gaussian(mu, logvar)
        z_m = q_m.rsample()  # [M,B,modality_dim]
        presentf = present.to(mu.dtype)
        rec = torch.zeros_like(presentf[0])
        for i, name in enumerate(self.names):
            lls = self.log_likelihoods(z_m[i].unsqueeze(0), batch, [name])
            if name in lls:
                rec = rec + lls[name][0]
        kl_m = (q_m.kl_standard() * presentf).sum(0)  # [B]
        target = z_m.detach()
        q = self.top_posterior(target, self.seen_by_top(present))
        z = q.rsample()
        sq = torch.stack([(target[i] - self.top_down_mean(n, z)).pow(2).sum(-1) for i, n in enumerate(self.names)])
        rec_top = (sq * presentf).sum(0)  # [B]
        kl_top = q.kl_standard()
        objective = rec - cfg.modality_beta * beta_scale * kl_m - cfg.gamma * rec_top - cfg.beta * beta_scale * kl_top
        valid = present.any(0)
        total = -masked_mean(objective, valid)
        return LossOutput(total, {"loss": total.detach(), "rec": masked_mean(rec, valid).detach(),
                                  "kl": masked_mean(kl_m + kl_top, valid).detach(),
                                  "rec_nexus": masked_mean(rec_top, valid).detach(),
                                  "kl_nexus": masked_mean(kl_top, valid).detach()})


register_model("nexus", Nexus)
