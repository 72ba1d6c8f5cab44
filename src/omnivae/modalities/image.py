"""Images [B,C,H,W]: convolutional, residual or MLP encoder and decoder built from the shape.

Architectures (`arch`):
- "conv": one stride-2 4x4 conv per entry of `channels`, a Linear head; the decoder mirrors it
  with transposed convs. Cheap; good enough for small images (28x28, 32x32).
- "resnet": a stem conv, then per stage a stride-2 conv and `blocks` residual blocks
  (conv3x3-GroupNorm-SiLU-conv3x3-GroupNorm + skip), down to about 4x4 (at most len(channels)
  stages), a Linear head. The decoder mirrors it with nearest-neighbour upsampling to the
  encoder's recorded sizes + conv3x3 (no transposed convs, so no checkerboard), ending in a
  conv3x3 to the image channels (logits). Any H, W (odd or not a power of two) works.
- "mlp": Linear layers of widths `hidden` on the flattened pixels.
- "auto" (the default): "resnet" when the smaller side is >= RESNET_MIN_SIDE pixels, else "conv";
  resolved when the spec is built, so a saved config records the network actually used.
With `pretrained_path` the encoder is instead a pretrained image model (ResNet, ViT) from that
folder plus a trained head of widths `hidden` (omnivae.modalities.pretrained), and `arch` builds
only the decoder.
No BatchNorm in the networks built here, and a pretrained network's batch norms always use their
running statistics: batches mix examples whose modality is missing (placeholders), and eval
outputs must not depend on the batch.

`dropout` p > 0 adds, after every hidden activation, nn.Dropout2d on feature maps (whole
channels are dropped: neighbouring pixels are correlated, so dropping single ones barely
regularises; Tompson et al. 2015) and nn.Dropout on dense layers; never on an output layer.
At p = 0 no dropout module is built: the networks are exactly those without the option.

`ladder: [l_1, ...]` puts private latent layers between the model's code and the decoder (a
hierarchical image branch in any model; omnivae.modalities.ladder_branch).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field, field_validator, model_validator
from torch import nn

from omnivae.config import PositiveFloat, PositiveInt
from omnivae.modalities import likelihoods
from omnivae.modalities.base import DropoutRate, Modality, ModalitySpec, check_finite, dropped, flatten_codes, \
    full_precision, mlp, numeric_array
from omnivae.modalities.ladder_branch import LadderBranch
from omnivae.modalities.pretrained import TransformersImageEncoder, resolve_folder


RESNET_MIN_SIDE = 48  # arch "auto": images whose smaller side is at least this get the resnet
# channels when unset. The resnet's are narrower: its 3x3 convs and residual blocks at every stage
# cost about 4x the conv net's FLOPs at equal widths; at these a 64x64 step at batch 64 takes about
# twice the conv net's (benchmarks/bench_image_nets.py).
DEFAULT_CHANNELS = {"conv": (32, 64, 128), "mlp": (32, 64, 128), "resnet": (16, 32, 64)}


def resolve_arch(arch: str, shape) -> str:
    """"auto" -> "resnet" for images whose smaller side is >= RESNET_MIN_SIDE, else "conv"."""
    if arch != "auto":
        return arch
    return "resnet" if min(shape[1:]) >= RESNET_MIN_SIDE else "conv"


class ImageSpec(ModalitySpec):
    kind: Literal["image"] = "image"
    shape: tuple[PositiveInt, PositiveInt, PositiveInt]  # channels, height, width
    arch: Literal["auto", "conv", "resnet", "mlp"] = "auto"  # "auto" is resolved (see resolve_arch) on build
    # conv: one stride-2 layer each. resnet: stage k has width channels[k-1] (the stem channels[0]); as
    # many stages as the size allows (down to about 4x4). Unset: DEFAULT_CHANNELS[arch], stored resolved
    channels: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    blocks: PositiveInt = 1  # resnet: residual blocks per stage (encoder and decoder)
    hidden: list[PositiveInt] = [512]  # mlp: hidden widths (conv: width of the dense layer, if any)
    likelihood: Literal["bernoulli", "gaussian", "laplace"] = "bernoulli"
    scale: PositiveFloat = 0.1  # gaussian/laplace pixel scale
    learn_scale: bool = False
    dropout: DropoutRate = 0.0  # rate after every hidden activation of encoder and decoder (0: none)
    # a local folder with a transformers image model and its preprocessor_config.json (needs
    # omnivae[pretrained]): the encoder; stored as an absolute path, and needed again to load the model
    pretrained_path: str | None = None
    fine_tune: bool = False  # train the pretrained model too (else frozen, its features cached)
    # private latent layers below the model's code for this modality, bottom (read by the
    # decoder) first: a ladder branch (omnivae.modalities.ladder_branch); [] none
    ladder: list[PositiveInt] = []

    @field_validator("pretrained_path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return resolve_folder(v)

    @model_validator(mode="after")
    def _resolve_defaults(self) -> "ImageSpec":
        """Store the network actually built, never "auto" or unset widths: a saved config names it."""
        resolved = {}
        if self.arch == "auto":
            resolved["arch"] = resolve_arch("auto", self.shape)
        if self.channels is None:
            resolved["channels"] = list(DEFAULT_CHANNELS.get(resolved.get("arch", self.arch), DEFAULT_CHANNELS["conv"]))
        for key, value in resolved.items():  # through __dict__: an assignment would validate again
            self.__dict__[key] = value
            self.__pydantic_fields_set__.add(key)
        if self.fine_tune and self.pretrained_path is None:
            raise ValueError("fine_tune applies to a pretrained encoder only: set pretrained_path")
        return self


LADDER_HIDDEN = [128]  # hidden widths of a ladder branch's top-down MLPs


def ladder_up(arch: str, shape, channels, spec: ImageSpec, p: float) -> nn.Module:
    """A ladder branch's bottom-up network: pixels -> 2 * sum(spec.ladder) estimates, a conv net
    of half the encoder's widths (dense layers of half `hidden` for mlp or too small images)."""
    out = 2 * sum(spec.ladder)
    if arch != "mlp" and min(shape[1:]) >= 2 ** len(channels):
        return ConvEncoder(shape, [max(8, c // 2) for c in channels], out, p)
    return nn.Sequential(nn.Flatten(), mlp([math.prod(shape), *(max(8, h // 2) for h in spec.hidden), out], dropout=p))


def conv_sizes(shape, channels) -> list[tuple[int, int]]:
    """Feature-map sizes of the conv encoder: (H, W) of the input, then after each stride-2 4x4 conv."""
    sizes = [tuple(shape[1:])]
    for _ in channels:
        sizes.append(tuple((s - 2) // 2 + 1 for s in sizes[-1]))
    return sizes


class ConvEncoder(nn.Module):
    def __init__(self, shape, channels, out_dim, dropout: float = 0.0):
        super().__init__()
        layers, c = [], shape[0]
        for c_out in channels:
            layers += dropped([nn.Conv2d(c, c_out, 4, 2, 1), nn.ReLU()], dropout, nn.Dropout2d)
            c = c_out
        self.sizes = conv_sizes(shape, channels)
        self.convs, self.flat = nn.Sequential(*layers), (c, *self.sizes[-1])
        self.head = nn.Linear(math.prod(self.flat), out_dim)

    def forward(self, x):
        # channels_last: oneDNN's convolutions run faster on CPU in that layout (here 1.1-1.3x a
        # training step, 1.4-1.6x evaluation, 28x28 to 64x64: benchmarks/bench_memory_format.py);
        # flatten reads the logical (C, H, W) order
        return self.head(self.convs(x.contiguous(memory_format=torch.channels_last)).flatten(1))


class ConvDecoder(nn.Module):
    def __init__(self, shape, channels, sizes, flat, latent_dim, dropout: float = 0.0):
        super().__init__()
        self.flat = flat
        self.fc = nn.Sequential(*dropped([nn.Linear(latent_dim, math.prod(flat)), nn.ReLU()], dropout, nn.Dropout))
        outs = list(reversed(channels[:-1])) + [shape[0]]
        layers, c = [], flat[0]
        for i, c_out in enumerate(outs):
            (h_in, w_in), (h, w) = sizes[-1 - i], sizes[-2 - i]
            pad = (h - 2 * h_in, w - 2 * w_in)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1, output_padding=pad))
            if i < len(outs) - 1:
                layers += dropped([nn.ReLU()], dropout, nn.Dropout2d)
            c = c_out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):
        x = self.fc(z).view(-1, *self.flat).contiguous(memory_format=torch.channels_last)
        return self.deconvs(x).contiguous()  # NCHW: callers view it as [N, C, H, W]


def group_norm(c: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (the largest count <= 8 that divides c): per example, so
    placeholders of missing examples never leak into others and eval equals train."""
    return nn.GroupNorm(next(g for g in range(min(8, c), 0, -1) if c % g == 0), c)


class ResBlock(nn.Module):
    """x + GN(conv3x3(SiLU(GN(conv3x3(x))))), then SiLU. The last norm starts at zero, so each
    block starts as the identity (a deep stack trains like a shallow one at first)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), group_norm(c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, 1, 1), group_norm(c))
        nn.init.zeros_(self.body[-1].weight)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(x + self.body(x))


def conv_norm_act(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), group_norm(c_out), nn.SiLU())


def resnet_stages(shape, channels) -> list[tuple[int, int]]:
    """Feature-map sizes [(H, W) of the input, then after each stage]: stride-2 stages (3x3,
    padding 1: ceil halving) until the smaller side is <= 4, at least one and at most
    len(channels) stages."""
    h, w = shape[1:]
    sizes = [(h, w)]
    while len(sizes) <= len(channels) and (len(sizes) == 1 or min(h, w) > 4):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def resnet_widths(channels, sizes) -> list[int]:
    """Widths of the resnet's stem, then of each of its len(sizes) - 1 stages."""
    return [channels[0], *channels[:len(sizes) - 1]]


class ResNetEncoder(nn.Module):
    """Stem conv3x3 (width channels[0]) at full size; stage k: stride-2 conv3x3 to width
    channels[k-1], `blocks` residual blocks; flatten + Linear to out_dim."""

    def __init__(self, shape, channels, blocks, out_dim, dropout: float = 0.0):
        super().__init__()
        self.sizes = resnet_stages(shape, channels)
        self.widths = widths = resnet_widths(channels, self.sizes)
        layers: list[nn.Module] = dropped([conv_norm_act(shape[0], widths[0])], dropout, nn.Dropout2d)
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stage = [conv_norm_act(c_in, c_out, stride=2), *(ResBlock(c_out) for _ in range(blocks))]
            layers += dropped(stage, dropout, nn.Dropout2d)
        self.convs = nn.Sequential(*layers)
        self.flat = (widths[-1], *self.sizes[-1])
        self.head = nn.Linear(math.prod(self.flat), out_dim)

    def forward(self, x):
        # channels_last: oneDNN's convolutions run about twice as fast on CPU in that layout
        x = self.convs(x.contiguous(memory_format=torch.channels_last))
        return self.head(x.flatten(1))  # flatten is in logical (C, H, W) order whatever the layout


class UpStage(nn.Module):
    """Residual blocks at this stage's size, then nearest upsampling to exactly `size` + conv3x3."""

    def __init__(self, c_in: int, c_out: int, blocks: int, size: tuple[int, int], last: bool,
                 dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.Sequential(*(ResBlock(c_in) for _ in range(blocks)))
        self.size = tuple(size)
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1) if last else conv_norm_act(c_in, c_out)
        if dropout and not last:  # registered only when used: p = 0 leaves the module list as it was
            self.drop = nn.Dropout2d(dropout)

    def forward(self, x):
        x = self.conv(F.interpolate(self.blocks(x), size=self.size, mode="nearest"))
        return self.drop(x) if "drop" in self._modules else x


class ResNetDecoder(nn.Module):
    """Mirror of ResNetEncoder: Linear to the encoder's last feature map; per stage (deepest
    first) residual blocks, upsampling to the encoder's recorded size and a conv3x3 to the
    previous stage's width; the last stage's conv outputs the image channels (logits), so
    the output is exactly [C, H, W] whatever H and W."""

    def __init__(self, shape, widths, sizes, blocks, latent_dim, dropout: float = 0.0):
        super().__init__()
        self.flat = (widths[-1], *sizes[-1])
        fc = [nn.Linear(latent_dim, math.prod(self.flat)), nn.SiLU()]
        self.fc = nn.Sequential(*dropped(fc, dropout, nn.Dropout))
        stages, n = [], len(sizes) - 1
        for k in range(n, 0, -1):  # stage k: widths[k] at sizes[k] -> widths[k-1] (image channels last) at sizes[k-1]
            last = k == 1
            stages.append(UpStage(widths[k], shape[0] if last else widths[k - 1], blocks, sizes[k - 1], last,
                                  dropout))
        self.stages = nn.Sequential(*stages)

    def forward(self, z):
        x = self.fc(z).view(-1, *self.flat).contiguous(memory_format=torch.channels_last)
        return self.stages(x).contiguous()  # NCHW: callers view it as [N, C, H, W] or flatten it


def unit_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as new floats in [0, 1]; float images pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class ImageModality(Modality):
    kind = "image"
    spec_class = ImageSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: uint8 [N, C, H, W] (0..255) or float [N, C, H, W] in [0, 1]. In a folder's
    # metadata the column names image files, which omnivae.data.folder scans and decodes.
    column_names_files = True

    @classmethod
    def infer_spec(cls, values, mask, class_names=None) -> dict:
        arr = np.asarray(values)
        return {"shape": list(arr.shape[1:]) if arr.ndim == 4 else [1, *arr.shape[1:]]}

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        return (arr.ndim == 4 and (arr.dtype == np.uint8 or arr.dtype.kind == "f")) or \
            (arr.ndim == 3 and arr.dtype == np.uint8)

    @classmethod
    def claims_arrow(cls, arrow_type) -> bool:
        """Encoded image bytes: binary cells, or structs with a "bytes" field (Hugging Face datasets)."""
        import pyarrow as pa

        return pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or \
            (pa.types.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0)

    @classmethod
    def read_arrow(cls, name, column):
        """PNG/JPEG bytes decoded at the most common size; undecodable rows are missing."""
        import pyarrow as pa

        from omnivae.data.arrays import decode_images

        cells = column.field("bytes") if pa.types.is_struct(column.type) else column
        pixels, present = decode_images(name, cells.to_pylist())
        return pixels, None, present

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        """[N,C,H,W], [N,H,W] (grey) or channels-last [N,H,W,C] (turned, as a view)."""
        from omnivae.data.folder import CHANNELS

        arr = cls.numeric_rows(name, arr, 4, "[N,C,H,W] or [N,H,W]")
        if arr.shape[1] not in CHANNELS.values() and arr.shape[3] in CHANNELS.values():
            arr = arr.transpose(0, 3, 1, 2)
        return arr, cls.finite_rows(arr) if present is None else present, None

    def to_raw(self, x: torch.Tensor, like):
        """uint8 data get generated pixels rounded to 0..255; float data get [0, 1]."""
        if isinstance(like, np.ndarray) and like.dtype == np.uint8:
            values = unit_pixels(x).detach().cpu().numpy().reshape(len(x), *like.shape[1:])
            return np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
        return super().to_raw(x, like)

    def __init__(self, name: str, spec: ImageSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        shape, n_pix = tuple(spec.shape), math.prod(spec.shape)
        # specs resolve "auto" and unset channels themselves; a model_copy(update=...) may not
        arch = resolve_arch(spec.arch, shape)
        channels = list(spec.channels or DEFAULT_CHANNELS.get(arch, DEFAULT_CHANNELS["conv"]))
        p, own = spec.dropout, spec.pretrained_path is None  # own: the encoder of `arch`, else pretrained
        read = spec.ladder[0] if spec.ladder else latent_dim  # the decoder's input: the code, or the ladder's bottom
        if arch == "resnet":
            if own:
                self.encoder = ResNetEncoder(shape, channels, spec.blocks, 2 * latent_dim, p)
            sizes = resnet_stages(shape, channels)
            self.decoder = ResNetDecoder(shape, resnet_widths(channels, sizes), sizes, spec.blocks, read, p)
        elif arch == "conv":
            if min(shape[1:]) < 2 ** len(channels):
                raise self._error(f"image {shape} is too small for {len(channels)} stride-2 layers")
            if own:
                self.encoder = ConvEncoder(shape, channels, 2 * latent_dim, p)
            sizes = conv_sizes(shape, channels)
            self.decoder = ConvDecoder(shape, channels, sizes, (channels[-1], *sizes[-1]), read, p)
        else:
            if own:
                self.encoder = nn.Sequential(nn.Flatten(), mlp([n_pix, *spec.hidden, 2 * latent_dim], dropout=p))
            self.decoder = mlp([read, *reversed(spec.hidden), n_pix], dropout=p)
        if not own:  # features of a pretrained model (frozen unless fine_tune) + a trained head
            self.encoder = TransformersImageEncoder(spec.pretrained_path, spec.fine_tune, shape[0], spec.hidden,
                                                    2 * latent_dim, f"modality {name!r} (image)")
        self.ladder = LadderBranch(latent_dim, spec.ladder, LADDER_HIDDEN, ladder_up(arch, shape, channels, spec, p)) \
            if spec.ladder else None
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

    def decode(self, z: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """z[N,D] -> decoder output (logits or pre-sigmoid means) [N,C,H,W]; a ladder branch's
        private layers at their conditional means, or drawn with sample=True."""
        if self.ladder is not None:
            z = self.ladder.bottom(z, sample)
        return self.decoder(z).view(-1, *self.spec.shape)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) [..., B] for codes z [..., B, D]; with a ladder branch its ELBO over the
        private layers (one draw each; see omnivae.modalities.ladder_branch)."""
        kl = None
        if self.ladder is not None:
            z, kl = self.ladder.posterior_bottom(z, self.features(x))
        flat, lead = flatten_codes(z)
        out = full_precision(self.decoder(flat)).reshape(*lead, -1)  # fp32 scores under bf16 autocast
        target = self.features(x).reshape(x.shape[0], -1)
        if self.spec.likelihood == "bernoulli":
            ll = likelihoods.bernoulli(out, target)
        else:
            ll = likelihoods.CONTINUOUS[self.spec.likelihood](torch.sigmoid(out), target, self.log_scale)
        return ll if kl is None else ll - kl

    def generate(self, z: torch.Tensor, sample: bool = False, **_) -> torch.Tensor:
        """Mean image in [0,1] (or a Bernoulli / noisy draw with sample=True, the ladder branch's
        private layers drawn too)."""
        mean = torch.sigmoid(self.decode(z, sample))
        if not sample:
            return mean
        if self.spec.likelihood == "bernoulli":
            return torch.bernoulli(mean)
        return (mean + self.log_scale.exp() * torch.randn_like(mean)).clamp(0, 1)

    def to_output(self, x: torch.Tensor) -> torch.Tensor:
        return unit_pixels(x)  # the caller's own copy, never the cache

    # -- capabilities ----------------------------------------------------------------------
    stackable = True
    adversarial = True

    def decoded_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable mean images [N,C,H,W] in [0,1]."""
        return torch.sigmoid(self.decode(z))

    def squared_errors(self, generated: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        """Pixels in [0, 1]: the generated mean as it is, the input through `features`."""
        truth = truth.to(generated.device)
        return {"mse": float(((generated.float() - self.features(truth).float()) ** 2).sum())}

    def error_summary(self, mean_errors: dict[str, float]) -> dict[str, float]:
        """Adds the peak signal-to-noise ratio of pixels in [0, 1]: psnr_db = 10 log10(1 / mse)."""
        from omnivae.metrics.reconstruction import psnr

        return {**mean_errors, "psnr_db": psnr(mean_errors["mse"])}

    # -- augmentation and corruption -----------------------------------------------------
    def augment(self, x: torch.Tensor, config, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random shifts and flips (dtype kept: uint8 stays uint8) and, with config.noise > 0, pixel
        noise on floats in [0, 1] (`features`, which this kind also accepts as input)."""
        from omnivae.modalities.image_ops import add_noise, shift_and_flip

        x = shift_and_flip(x, config.shift, config.flip, generator)
        return add_noise(self.features(x), config.noise, generator) if config.noise > 0 else x

    @classmethod
    def corrupt(cls, values, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from omnivae.modalities.image_ops import corrupt_pictures

        return corrupt_pictures(values, rows, rng)

    @classmethod
    def corruption_text(cls) -> str:
        from omnivae.modalities.image_ops import CORRUPTION_TEXT

        return CORRUPTION_TEXT

    # -- user inputs and outputs ---------------------------------------------------------
    def figure_items(self, outputs: torch.Tensor) -> torch.Tensor:
        """Pictures as they are: [N,C,H,W] in [0,1]."""
        return outputs

    @classmethod
    def preview(cls, value) -> dict:
        return {"thumbnail": cls.json_item(value)}

    def read_cli(self, values: list[str]):
        """Image files (PNG, JPEG, ...; converted and resized to the model's shape) or .npy arrays."""
        from omnivae.modalities.base import load_npy
        from omnivae.modalities.image_files import read_image_file

        return np.stack([load_npy(v) if v.endswith(".npy") else read_image_file(v, self.spec.shape)
                         for v in values])

    def read_json(self, values: list, where: list[str], limits):
        """Base64 PNG/JPEG data URLs (or raw base64)."""
        from omnivae.modalities.image_files import decode_data_url

        return np.stack([decode_data_url(v, self.spec.shape, limits.max_image_side, w)
                         for v, w in zip(values, where)])

    @classmethod
    def json_item(cls, item):
        from omnivae.modalities.image_files import png_data_url

        return png_data_url(item)

    def write_items(self, items, folder: Path, stem: str) -> dict:
        """One PNG per sample (stem_000.png, ...) and, for several, a grid of them all (stem.png)."""
        from omnivae.modalities.image_files import png_bytes, to_pil

        folder = Path(folder)
        files = []
        for j, img in enumerate(items):
            path = folder / f"{stem}_{j:03d}.png"
            path.write_bytes(png_bytes(img))
            files.append(path.name)
        entry: dict = {"files": files}
        if len(items) > 1:
            tiles = [to_pil(img) for img in items]
            ncol = min(len(tiles), 10)
            w, h = tiles[0].size
            grid = Image.new(tiles[0].mode, (ncol * (w + 2) + 2, -(-len(tiles) // ncol) * (h + 2) + 2), "white")
            for j, tile in enumerate(tiles):
                grid.paste(tile, (2 + (j % ncol) * (w + 2), 2 + (j // ncol) * (h + 2)))
            grid.save(folder / f"{stem}.png")
            entry["grid"] = f"{stem}.png"
        return entry

    def scorer(self, raw, x: torch.Tensor, epochs: int, seed: int, cache_dir=None):
        """A small CNN per attribute, trained on blurred and sharp copies of the real images."""
        from omnivae.metrics.coherence import classifier_scorer

        return classifier_scorer(self.features(x), raw, "conv", epochs, seed, augment=True, cache_dir=cache_dir)
