"""1-D signals [B,C,L] (time series, audio frames, spectra): Conv1d (or MLP) encoder and
decoder built from the length, Gaussian or Laplace likelihood on per-channel standardised values.

`dropout` p > 0 adds, after every hidden activation, nn.Dropout1d on conv feature maps (whole
channels: neighbouring time steps are correlated, so dropping single values barely regularises)
and nn.Dropout on dense layers; never on an output layer. At p = 0 no dropout module is built."""
from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from omnivae.config import PositiveInt
from omnivae.modalities import likelihoods
from omnivae.modalities.base import DropoutRate, ModalitySpec, StandardizedModality, check_finite, \
    dropped, flatten_codes, full_precision, mlp


class SignalSpec(ModalitySpec):
    kind: Literal["signal"] = "signal"
    shape: tuple[PositiveInt, PositiveInt]  # channels, length
    arch: Literal["conv", "mlp"] = "conv"
    channels: Annotated[list[PositiveInt], Field(min_length=1)] = [32, 64, 128]  # conv: one stride-2 layer each
    hidden: list[PositiveInt] = [256]  # mlp: hidden widths
    likelihood: Literal["gaussian", "laplace"] = "gaussian"
    learn_scale: bool = True  # per-channel scale of the likelihood (starts at 1 = the data's std)
    standardize: bool = True  # per-channel mean/std learned from training data in fit()
    dropout: DropoutRate = 0.0  # rate after every hidden activation of encoder and decoder (0: none)


class ConvEncoder1d(nn.Module):
    def __init__(self, shape, channels, out_dim, dropout: float = 0.0):
        super().__init__()
        c, length = shape
        layers, self.lengths = [], [length]
        for c_out in channels:
            layers += dropped([nn.Conv1d(c, c_out, 4, 2, 1), nn.ReLU()], dropout, nn.Dropout1d)
            c, length = c_out, (length - 2) // 2 + 1
            self.lengths.append(length)
        self.convs, self.flat = nn.Sequential(*layers), (c, length)
        self.head = nn.Linear(c * length, out_dim)

    def forward(self, x):
        return self.head(self.convs(x).flatten(1))


class ConvDecoder1d(nn.Module):
    def __init__(self, shape, channels, lengths, flat, latent_dim, dropout: float = 0.0):
        super().__init__()
        self.flat = flat
        self.fc = nn.Sequential(*dropped([nn.Linear(latent_dim, math.prod(flat)), nn.ReLU()], dropout, nn.Dropout))
        outs = list(reversed(channels[:-1])) + [shape[0]]
        layers, c = [], flat[0]
        for i, c_out in enumerate(outs):
            l_in, l_out = lengths[-1 - i], lengths[-2 - i]
            layers.append(nn.ConvTranspose1d(c, c_out, 4, 2, 1, output_padding=l_out - 2 * l_in))
            if i < len(outs) - 1:
                layers += dropped([nn.ReLU()], dropout, nn.Dropout1d)
            c = c_out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):
        return self.deconvs(self.fc(z).view(-1, *self.flat))


class SignalModality(StandardizedModality):
    kind = "signal"
    values_name = "numeric signals"
    spec_class = SignalSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: float32 [N, C, L]; an example with a NaN or inf is missing

    @classmethod
    def infer_spec(cls, values, mask, class_names=None) -> dict:
        arr = np.asarray(values)
        return {"shape": list(arr.shape[1:]) if arr.ndim == 3 else [1, arr.shape[1]]}

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        return arr.ndim == 3 and arr.dtype.kind == "f"

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        arr = cls.numeric_rows(name, arr, 3, "[N,L] or [N,C,L]")
        arr = arr if arr.dtype == np.float32 else arr.astype(np.float32, copy=False)
        return arr, cls.finite_rows(arr), None

    def __init__(self, name: str, spec: SignalSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        c, length = shape = tuple(spec.shape)
        if c < 1 or length < 1:
            raise self._error(f"shape must be (channels, length) with both >= 1, got {shape}")
        if spec.arch == "conv":
            if length < 2 ** len(spec.channels):
                raise self._error(f"length {length} is too short for {len(spec.channels)} stride-2 layers "
                                  f"(needs >= {2 ** len(spec.channels)}); use fewer channels or arch 'mlp'")
            self.encoder = ConvEncoder1d(shape, spec.channels, 2 * latent_dim, spec.dropout)
            e = self.encoder
            self.decoder = ConvDecoder1d(shape, spec.channels, e.lengths, e.flat, latent_dim, spec.dropout)
        else:
            self.encoder = nn.Sequential(nn.Flatten(), mlp([c * length, *spec.hidden, 2 * latent_dim],
                                                           dropout=spec.dropout))
            self.decoder = nn.Sequential(mlp([latent_dim, *reversed(spec.hidden), c * length], dropout=spec.dropout),
                                         nn.Unflatten(1, shape))
        self.log_scale = nn.Parameter(torch.zeros(c, 1), requires_grad=spec.learn_scale)
        self.register_buffer("mean", torch.zeros(c, 1))
        self.register_buffer("std", torch.ones(c, 1))

    def fit(self, raw) -> None:
        """Per-channel mean and std over examples and time (when standardize is on)."""
        if not self.spec.standardize:
            return
        x = self._values(raw).double()  # float64: sums of large values stay finite
        self.mean.copy_(x.mean(dim=(0, 2)).unsqueeze(1))
        std = x.std(dim=(0, 2)).unsqueeze(1) if x.shape[0] * x.shape[2] > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std > 1e-6, std, 1.0))  # a constant channel is only centred

    def with_channels(self, x: torch.Tensor) -> torch.Tensor:
        one_channel = x.dim() == 2 and self.spec.shape[0] == 1 and x.shape[1] == self.spec.shape[1]
        return x.unsqueeze(1) if one_channel else x

    def check(self, x: torch.Tensor) -> None:
        c, length = self.spec.shape
        if x.dim() != 3 or tuple(x.shape[1:]) != (c, length):
            raise self._error(f"expected signals of shape [batch, {c}, {length}], got {list(x.shape)}")
        if not (x.is_floating_point() or x.dtype in (torch.int16, torch.int32, torch.int64)):
            raise self._error(f"expected float values, got dtype {x.dtype}")
        check_finite(self, x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def placeholder(self, n: int) -> torch.Tensor:
        return torch.zeros(n, *self.spec.shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z[N,D] -> standardised means [N,C,L]."""
        return self.decoder(z).view(-1, *self.spec.shape)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_codes(z)
        out = full_precision(self.decode(flat)).reshape(*lead, -1)  # fp32 scores under bf16 autocast
        target = self.features(x).reshape(x.shape[0], -1)
        log_scale = self.log_scale.expand(self.spec.shape).reshape(-1)
        return likelihoods.CONTINUOUS[self.spec.likelihood](out, target, log_scale)

    def generate(self, z: torch.Tensor, sample: bool = False, **_) -> torch.Tensor:
        """Mean signal (or a noisy draw with sample=True) in the data's own units."""
        out = self.decode(z)
        return (self.noisy(out) if sample else out) * self.std + self.mean

    def noisy(self, out: torch.Tensor) -> torch.Tensor:
        """A draw from the likelihood around standardised means [N,C,L]."""
        zero = torch.zeros_like(out)
        noise = torch.randn_like(out) if self.spec.likelihood == "gaussian" else \
            torch.distributions.Laplace(zero, zero + 1.0).sample()
        return out + self.log_scale.exp() * noise
