"""Deterministic multimodal autoencoder with one shared code (in the spirit of Ngiam et
al. 2011, "Multimodal deep learning", trained with the cross-modal objective below).

Each modality's code h_m is its encoder mean; the joint code h is the mean of the codes of
the present modalities. For every example:
  loss = -[ sum_n log p(x_n | h)  +  unimodal_weight * mean_m sum_n log p(x_n | h_m) ]
with n over the present modalities and m over the present ones too (cross-modal
reconstruction), so a code from any single modality, or the mean over any subset,
decodes every modality. Averaged over the examples holding at least one modality.
`fuse` returns the mask-weighted mean code with a tiny variance; sampling from N(0, I)
is only rough, since nothing pulls the codes towards that prior.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import field_validator

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, masked_mean
from omnivae.models.registry import register_model
from omnivae.models.ae import point_code
from omnivae.models.base import ModelConfig, MultimodalModel


class MultimodalAEConfig(ModelConfig):
    model: Literal["multimodal_ae"] = "multimodal_ae"
    unimodal_weight: float = 1.0  # weight of the reconstructions from each single-modality code

    @field_validator("unimodal_weight")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"unimodal_weight must be >= 0, got {v}")
        return v


def mean_code(mu: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Codes [M,B,D] with presence [M,B] -> mean over the present ones [B,D] (0 if none)."""
    w = present.to(mu.dtype).unsqueeze(-1)
    return (w * mu).sum(0) / w.sum(0).clamp_min(1.0)


class MultimodalAE(MultimodalModel):
    about = "deterministic multimodal autoencoder"
    paper = "Ngiam et al. 2011, Multimodal deep learning"
    config_class = MultimodalAEConfig
    deterministic_codes = True

    def fuse(self, mu, logvar, present) -> Gaussian:
        return point_code(mean_code(mu, present), present.any(0))

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, _, present = self.encode_unimodal(batch)  # [M,B,D], [M,B]
        m = len(self.names)
        unimodal = m > 1 and self.config.unimodal_weight > 0
        codes = torch.cat([mean_code(mu, present).unsqueeze(0), mu]) if unimodal else mean_code(mu, present)[None]
        rec = torch.stack(list(self.log_likelihoods(codes, batch).values())).sum(0)  # [1(+M),B], 0 where x_n missing
        any_present = present.any(0)
        joint = masked_mean(rec[0], any_present)
        if unimodal:
            presentf = present.to(rec.dtype)
            per_example = (rec[1:] * presentf).sum(0) / presentf.sum(0).clamp_min(1.0)
            cross = masked_mean(per_example, any_present)
        else:
            cross = joint.new_zeros(())
        total = -(joint + self.config.unimodal_weight * cross)
        return LossOutput(total, {"loss": total.detach(), "rec": joint.detach(), "rec_unimodal": cross.detach()})


register_model("multimodal_ae", MultimodalAE)
