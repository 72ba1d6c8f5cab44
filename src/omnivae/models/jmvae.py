"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016, "Joint multimodal learning with deep
generative models"): a joint encoder q(z|X) plus unimodal encoders q_m(z|x_m) that are
pulled towards it.

loss = -[E_q(z|X) sum_m log p(x_m|z) - beta * KL(q(z|X) || N(0, I))]
       + alpha * sum_m KL(q(z|X) || q_m(z|x_m))
averaged over the complete examples (every modality present).

Joint encoder (as in the paper): a network of its own over the raw inputs. Each modality
has a feature network of its encoder's architecture (the modality's kind and spec built
anew, its encoder sized to output `joint_features` values; it reads the same preprocessed
input, e.g. pixels in [0, 1], token ids, standardised vectors), the features go through
a ReLU, are concatenated and an MLP (`joint_hidden`) maps them to (mu, logvar) of q(z|X).
The joint ELBO therefore trains the joint encoder and the decoders only; the unimodal
encoders q_m(z|x_m) never take part in it and are trained only through the alpha-weighted
KL term, which keeps them usable posteriors for cross-modal generation.

Missing data: the objective is only defined on complete examples, so incomplete rows are
left out of every term (a batch with no complete row gives a zero loss).
Inference (`fuse`, `draw` and so `encode`, `generate`): the joint encoder for the rows
where every modality is present, otherwise the product of the given unimodal posteriors
without a prior expert (a single one is used as it is). `fuse` only receives the unimodal
(mu, logvar, present), so `encode_unimodal` computes q(z|X) when every modality of the
model is given and attaches it to the returned mu tensor (attribute `JOINT_ATTRIBUTE`);
`fuse` uses it for the complete rows. A mu without it (sliced, copied, or with some
modality not given) falls back to the product of experts, which is also what a row with a
missing modality gets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from pydantic import field_validator
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian, clamp_logvar, kl_normal, masked_mean
from omnivae.errors import ConfigError
from omnivae.fusion import product_of_experts
from omnivae.modalities.base import Modality, full_precision, mlp
from omnivae.models.registry import register_model
from omnivae.models.base import ModelConfig, MultimodalModel

JOINT_ATTRIBUTE = "_jmvae_joint"  # q(z|X) attached to the mu that encode_unimodal returns


class JointEncoderConfig(ModelConfig):
    """Options of a joint encoder network over the raw inputs (jmvae, and the models built on it)."""

    joint_features: PositiveInt = 128  # per-modality feature width in the joint encoder (even)
    joint_hidden: list[PositiveInt] = [128]  # hidden widths of the joint encoder's MLP over the features

    @field_validator("joint_features")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"joint_features must be even (each feature network is a modality encoder, "
                             f"which outputs 2 * its latent size), got {v}")
        return v


class JMVAEConfig(JointEncoderConfig):
    model: Literal["jmvae"] = "jmvae"
    # weight of sum_m KL(q(z|X) || q_m(z|x_m)), the unimodal encoders' only objective. 0.1 (the paper: 0.01
    # with long training) gave usable unimodal posteriors in 3-6 epochs on shapes easy; 1.0 did no better
    alpha: float = 0.1

    @field_validator("alpha")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not v >= 0 or v == float("inf"):
            raise ValueError(f"alpha must be a finite number >= 0, got {v}")
        return v


def feature_network(modality: Modality, width: int) -> nn.Module:
    """A new network of `modality`'s encoder architecture with `width` outputs: the same kind
    and spec built for latent size width / 2 (its encoder outputs mu and logvar, 2 * latent
    values), of which only the encoder is kept. The spec is the built modality's, so a text
    modality's vocabulary size fitted by `from_data` (or read from a saved config) is used."""
    fresh = type(modality)(modality.name, modality.spec, width // 2)
    net = fresh.encoder
    if hasattr(net, "_to_text"):  # a frozen sentence encoder reads captions through the tokenizer,
        net._to_text = modality.to_output  # which only the model's own modality holds (loaded later)
    return net


class JointEncoder(nn.Module):
    """q(z|X) from the preprocessed inputs of every modality (see the module docstring)."""

    def __init__(self, modalities: Mapping[str, Modality], width: int, hidden: Sequence[int], latent_dim: int):
        super().__init__()
        self.features = nn.ModuleDict({n: feature_network(m, width) for n, m in modalities.items()})
        self.head = mlp([len(modalities) * width, *hidden, 2 * latent_dim])

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Gaussian:
        h = torch.cat([torch.relu(self.features[n](inputs[n])) for n in self.features], -1)
        mu, logvar = full_precision(self.head(h)).chunk(2, -1)
        return Gaussian(mu, clamp_logvar(logvar))


class JMVAE(MultimodalModel):
    about = "joint multimodal VAE (joint encoder + unimodal encoders)"
    paper = "Suzuki et al. 2016, Joint multimodal learning with deep generative models"
    config_class = JMVAEConfig
    encodes_modalities_apart = False  # encode_unimodal reads several modalities per row (see base)

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        self.joint_encoder = JointEncoder(self.modalities, config.joint_features, config.joint_hidden,
                                          config.latent_dim)

    def check_config(self) -> None:
        if len(self.names) < 2:
            raise ConfigError(f"model 'jmvae' needs at least two modalities, got {self.names}; use vae for one")

    def joint_posterior(self, batch: Batch) -> Gaussian:
        """q(z|X) [B,D] from the raw inputs of every modality (placeholders stand in for a
        modality missing from the batch; such rows are never complete, so never used)."""
        first = next(iter(batch.data.values()))
        inputs = {}
        for name in self.names:
            mod = self.modalities[name]
            x = batch.data[name] if name in batch.data else mod.placeholder(len(first)).to(first.device)
            inputs[name] = mod.features(x)
        return self.joint_encoder(inputs)

    def encode_unimodal(self, batch: Batch, names: Sequence[str] | None = None):
        """As MultimodalModel.encode_unimodal; when every modality is given, q(z|X) rides on
        the returned mu (attribute JOINT_ATTRIBUTE) for `fuse` to use on the complete rows."""
        mu, logvar, present = super().encode_unimodal(batch, names)
        use = set(self.names if names is None else names)
        if all(n in batch.data and n in use for n in self.names):
            setattr(mu, JOINT_ATTRIBUTE, self.joint_posterior(batch))
        return mu, logvar, present

    def fuse(self, mu, logvar, present) -> Gaussian:
        poe = product_of_experts(mu, logvar, present.unsqueeze(0), prior_expert=False)[0]
        joint = getattr(mu, JOINT_ATTRIBUTE, None)
        if joint is None:
            return poe
        complete = present.all(0).unsqueeze(-1)  # [B,1]
        return Gaussian(torch.where(complete, joint.mu, poe.mu), torch.where(complete, joint.logvar, poe.logvar))

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = super().encode_unimodal(batch)  # the unimodal posteriors only
        complete = present.all(0)  # [B]
        q = self.joint_posterior(batch)
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
