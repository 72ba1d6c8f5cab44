"""Stacked autoencoder with greedy layer-wise pre-training (Bengio et al. 2007; Vincent
et al. 2010), as an MLP over one image or vector modality.

With layers [h1, ..., hL] the encoder is x -> h1 -> ... -> hL (the code, linear; the
others use `activation`) and the decoder mirrors it. Training runs in stages, switched
by `on_train_epoch_start(epoch)`, each `pretrain_epochs` long:
- stage 0 trains only the first encoder/decoder pair: x -> h1 -> x, scored by the
  modality's own likelihood (its decoder output is that likelihood's parameter, logits
  for Bernoulli images, so squared error would be the wrong score there);
- stage k (1 <= k < L) trains only pair k to rebuild the detached activation h_k of the
  layers below: loss = sum_j (h_k,j - rebuilt_j)^2, averaged over examples;
- stage L and later fine-tune end to end: loss = -log p(x | code).
The logged `loss` is always the end-to-end objective (computed without gradients while
pre-training), so checkpoints and curves compare across stages; `stage_loss` is what the
stage minimises and `stage` its number (L = fine-tuning). Outside training (eval mode)
the loss is the end-to-end one. The stack replaces the modality's own encoder and
decoder, so its arch/hidden options are set to mlp/[] (those small networks go unused).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Literal

import torch
from pydantic import field_validator, model_validator
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import masked_mean
from omnivae.modalities import MODALITY_KINDS, ModalitySpec
from omnivae.models.registry import register_model
from omnivae.models.ae import SingleModalityModel
from omnivae.models.base import ModelConfig
from omnivae.models.layer_sizes import code_size_from_layers

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
HIDDEN_WIDTHS = (128, 64, 32)  # the default stack before its code; given only latent_dim, those wider than it are kept


def default_layers(latent_dim: int) -> list[int]:
    """Layers for a config that sets latent_dim but not layers: HIDDEN_WIDTHS wider than the
    code, then the code (16 -> [128, 64, 32, 16], the default; 20 -> [128, 64, 32, 20]; 48 -> [128, 64, 48])."""
    return [w for w in HIDDEN_WIDTHS if w > latent_dim] + [latent_dim]


class StackedAEConfig(ModelConfig):
    model: Literal["stacked_ae"] = "stacked_ae"
    # widths after the input; the last is the code (= latent_dim). Unset: default_layers(latent_dim)
    layers: list[int] = default_layers(16)
    pretrain_epochs: int = 2  # epochs per layer pair; 0 trains end to end only
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"

    @model_validator(mode="before")
    @classmethod
    def _code_size_from_layers(cls, data: Any) -> Any:
        """Either size follows the other when only one is given: layers [..., 8] sets latent_dim 8,
        latent_dim 20 sets layers [128, 64, 32, 20] (so `--set model.model=stacked_ae` works on
        any config's latent_dim); both given must agree (_check_layers)."""
        return code_size_from_layers(data, default_layers)

    @field_validator("modalities", mode="after")
    @classmethod
    def _stack_replaces_networks(cls, value: dict[str, ModalitySpec]) -> dict[str, ModalitySpec]:
        out = {}
        for name, spec in value.items():
            if not MODALITY_KINDS[spec.kind].stackable:
                raise ValueError(f"stacked_ae works on one image or vector modality; {name!r} is {spec.kind!r}")
            # the stack replaces the kind's own networks: dense ones (unused) stand in for them
            fields = type(spec).model_fields  # dense networks, and no private ladder layers below the code
            out[name] = spec.model_copy(update={"hidden": [], **({"arch": "mlp"} if "arch" in fields else {}),
                                                **({"ladder": []} if "ladder" in fields else {})})
        return out

    @model_validator(mode="after")
    def _check_layers(self):
        if not self.layers or any(w < 1 for w in self.layers):
            raise ValueError(f"layers must be a non-empty list of positive widths, got {self.layers}")
        if self.layers[-1] != self.latent_dim:
            raise ValueError(f"the last of layers {self.layers} is the code size and must equal latent_dim "
                             f"{self.latent_dim}; drop one of them (either follows the other) or set layers: "
                             f"[..., {self.latent_dim}]")
        if self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        return self


class StackEncoder(nn.Module):
    """Features -> code; returns [code, zeros] so Modality.encode's (mu, logvar) split works."""

    def __init__(self, sizes: list[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS[activation]()

    def step(self, k: int, h: torch.Tensor) -> torch.Tensor:
        h = self.layers[k](h)
        return h if k == len(self.layers) - 1 else self.act(h)

    def hidden(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Output of the first `upto` layers (upto=0: the flattened input)."""
        h = x.flatten(1)
        for k in range(upto):
            h = self.step(k, h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.hidden(x, len(self.layers))
        return torch.cat([code, torch.zeros_like(code)], dim=-1)


class StackDecoder(nn.Module):
    """Code -> likelihood parameters [N, features]; `entering_at(k)` makes it start at
    pair k (input of width layers[k]) so stage k reuses the modality's likelihood."""

    def __init__(self, sizes: list[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(b, a) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS[activation]()
        self.start = len(self.layers) - 1

    def step(self, k: int, h: torch.Tensor) -> torch.Tensor:
        h = self.layers[k](h)
        return self.act(h) if k > 0 else h

    @contextmanager
    def entering_at(self, k: int):
        old, self.start = self.start, k
        try:
            yield
        finally:
            self.start = old

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for k in range(self.start, -1, -1):
            h = self.step(k, h)
        return h


class StackedAE(SingleModalityModel):
    about = "stacked autoencoder (greedy layer-wise pre-training)"
    paper = "Bengio et al. 2007, Greedy layer-wise training of deep networks"
    config_class = StackedAEConfig

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        mod = self.modalities[self.names[0]]
        width = mod.features(mod.placeholder(1)).flatten(1).shape[1]
        sizes = [width, *config.layers]
        mod.encoder = StackEncoder(sizes, config.activation)
        mod.decoder = StackDecoder(sizes, config.activation)
        self.stage = len(config.layers)  # outside the trainer: the end-to-end objective

    @property
    def num_stages(self) -> int:
        return len(self.config.layers)

    @property
    def pretraining_epochs(self) -> int:
        """Epochs spent pre-training before fine-tuning starts (a trainer's min_epochs)."""
        return self.num_stages * self.config.pretrain_epochs

    def stage_of(self, epoch: int) -> int:
        if self.config.pretrain_epochs == 0:
            return self.num_stages
        return min(epoch // self.config.pretrain_epochs, self.num_stages)

    def on_train_epoch_start(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.stage = self.stage_of(epoch)

    def adversarial_problem(self, name: str) -> str | None:
        return ("stacked_ae trains in greedy stages, one layer pair at a time, and an adversarial term "
                "would train the whole stack")

    def end_to_end(self, batch: Batch) -> torch.Tensor:
        """Mean log p(x | code) over the present examples."""
        name = self.names[0]
        mod = self.modalities[name]
        code = mod.encoder.hidden(mod.features(batch.data[name]), self.num_stages)  # the point code itself
        return masked_mean(self.log_likelihoods(code.unsqueeze(0), batch)[name][0], batch.mask.get(name))

    def pair_loss(self, k: int, batch: Batch) -> torch.Tensor:
        """Stage k's objective; only pair k is in the graph."""
        name = self.names[0]
        mod, present = self.modalities[name], batch.mask.get(name)  # None: all present
        enc, dec = mod.encoder, mod.decoder
        with torch.no_grad():
            below = enc.hidden(mod.features(batch.data[name]), k)
        h = enc.step(k, below)
        if k == 0:
            with dec.entering_at(0):
                return -masked_mean(self.log_likelihoods(h.unsqueeze(0), batch)[name][0], present)
        return masked_mean((dec.step(k, h) - below).pow(2).sum(-1), present)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        stage = self.stage if self.training else self.num_stages
        if stage >= self.num_stages:
            rec = self.end_to_end(batch)
            total = stage_loss = -rec
        else:
            total = stage_loss = self.pair_loss(stage, batch)
            with torch.no_grad():
                rec = self.end_to_end(batch)
        terms = {"loss": -rec.detach(), "rec": rec.detach(), "stage_loss": stage_loss.detach(),
                 "stage": torch.tensor(float(stage), device=rec.device)}
        return LossOutput(total, terms)


register_model("stacked_ae", StackedAE)
