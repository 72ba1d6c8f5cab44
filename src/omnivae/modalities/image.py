"""Images [B,C,H,W]: convolutional (or MLP) encoder and decoder built from the shape."""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from omnivae.config import PositiveFloat, PositiveInt
from omnivae.modalities import likelihoods
from omnivae.modalities.base import Modality, ModalitySpec, check_finite, flatten_codes, full_precision, mlp, \
    numeric_array


class ImageSpec(ModalitySpec):
    kind: Literal["image"] = "image"
    shape: tuple[PositiveInt, PositiveInt, PositiveInt]  # channels, height, width
    arch: Literal["conv", "mlp"] = "conv"
    channels: Annotated[list[PositiveInt], Field(min_length=1)] = [32, 64, 128]  # conv: one stride-2 layer each
    hidden: list[PositiveInt] = [512]  # mlp: hidden widths (conv: width of the dense layer, if any)
    likelihood: Literal["bernoulli", "gaussian", "laplace"] = "bernoulli"
    scale: PositiveFloat = 0.1  # gaussian/laplace pixel scale
    learn_scale: bool = False


class ConvEncoder(nn.Module):
    def __init__(self, shape, channels, out_dim):
        super().__init__()
        c, h, w = shape
        layers, sizes = [], [(h, w)]
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), nn.ReLU()]
            c, h, w = c_out, (h - 2) // 2 + 1, (w - 2) // 2 + 1
            sizes.append((h, w))
        self.convs, self.sizes, self.flat = nn.Sequential(*layers), sizes, (c, h, w)
        self.head = nn.Linear(c * h * w, out_dim)

    def forward(self, x):
        return self.head(self.convs(x).flatten(1))


class ConvDecoder(nn.Module):
    def __init__(self, shape, channels, sizes, flat, latent_dim):
        super().__init__()
        self.flat = flat
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(flat)), nn.ReLU())
        outs = list(reversed(channels[:-1])) + [shape[0]]
        layers, c = [], flat[0]
        for i, c_out in enumerate(outs):
            (h_in, w_in), (h, w) = sizes[-1 - i], sizes[-2 - i]
            pad = (h - 2 * h_in, w - 2 * w_in)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1, output_padding=pad))
            if i < len(outs) - 1:
                layers.append(nn.ReLU())
            c = c_out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):
        return self.deconvs(self.fc(z).view(-1, *self.flat))


def unit_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as new floats in [0, 1]; float images pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class ImageModality(Modality):
    kind = "image"
    spec_class = ImageSpec

    def __init__(self, name: str, spec: ImageSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        shape, n_pix = tuple(spec.shape), math.prod(spec.shape)
        if spec.arch == "conv":
            if min(shape[1:]) < 2 ** len(spec.channels):
                raise self._error(f"image {shape} is too small for {len(spec.channels)} stride-2 layers")
            self.encoder = ConvEncoder(shape, spec.channels, 2 * latent_dim)
            e = self.encoder
            self.decoder = ConvDecoder(shape, spec.channels, e.sizes, e.flat, latent_dim)
        else:
            self.encoder = nn.Sequential(nn.Flatten(), mlp([n_pix, *spec.hidden, 2 * latent_dim]))
            self.decoder = mlp([latent_dim, *reversed(spec.hidden), n_pix])
        self.log_scale = nn.Parameter(torch.tensor(math.log(spec.scale)), requires_grad=spec.learn_scale)

    def prepare(self, raw) -> torch.Tensor:
        x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(numeric_array(self, raw, "images"))
        if x.dim() == 3 and self.spec.shape[0] == 1 and tuple(x.shape[1:]) == tuple(self.spec.shape[1:]):
            x = x.unsqueeze(1)
        self.check(x)
        return x if x.dtype == torch.uint8 else x.float()

    def check(self, x: torch.Tensor) -> None:
        want = tuple(self.spec.shape)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise self._error(f"expected images of shape [batch, {', '.join(map(str, want))}], got {list(x.shape)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise self._error(f"expected uint8 (0..255) or float (0..1) pixels, got dtype {x.dtype}")
        check_finite(self, x)
        if x.is_floating_point() and x.numel() and (x.min() < 0 or x.max() > 1):
            raise self._error(f"float pixels must lie in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> floats in [0, 1]. A step asks twice for the same batch (encoder input
        and likelihood target), so the last conversion is kept while its input is unchanged
        (same tensor, same in-place version counter)."""
        if x.dtype != torch.uint8 or torch.compiler.is_compiling():  # compiled: the conversion fuses anyway
            return unit_pixels(x)
        last = self.__dict__.get("_last_features")
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        out = unit_pixels(x)
        if x.numel() <= 1 << 22:  # batches, not whole data sets, stay cached
            self.__dict__["_last_features"] = (x, x._version, out)  # a plain attribute, not module state
        return out

    def placeholder(self, n: int) -> torch.Tensor:
        return torch.zeros(n, *self.spec.shape, dtype=torch.uint8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z[N,D] -> decoder output (logits or pre-sigmoid means) [N,C,H,W]."""
        return self.decoder(z).view(-1, *self.spec.shape)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_codes(z)
        out = full_precision(self.decoder(flat)).reshape(*lead, -1)  # fp32 scores under bf16 autocast
        target = self.features(x).reshape(x.shape[0], -1)
        if self.spec.likelihood == "bernoulli":
            return likelihoods.bernoulli(out, target)
        fn = likelihoods.CONTINUOUS[self.spec.likelihood]
        return fn(torch.sigmoid(out), target, self.log_scale)

    def generate(self, z: torch.Tensor, sample: bool = False, **_) -> torch.Tensor:
        """Mean image in [0,1] (or a Bernoulli / noisy draw with sample=True)."""
        mean = torch.sigmoid(self.decode(z))
        if not sample:
            return mean
        if self.spec.likelihood == "bernoulli":
            return torch.bernoulli(mean)
        return (mean + self.log_scale.exp() * torch.randn_like(mean)).clamp(0, 1)

    def to_output(self, x: torch.Tensor) -> torch.Tensor:
        return unit_pixels(x)  # the caller's own copy, never the cache
