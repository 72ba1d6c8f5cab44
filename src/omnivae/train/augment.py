"""Training-image augmentation: random shifts, horizontal flips and pixel noise, applied to the
picture modalities of a training batch (never to validation or test data), batched on the
tensors: one gather per modality for shifts and flips, one noise draw.

Which modalities are images is the modality's to say (its `pictures` capability: a [B,C,H,W]
tensor of uint8 pixels or floats in [0, 1]). Shifts and flips keep the dtype (uint8 stays
uint8); noise needs floats, so with noise > 0 uint8 pixels become floats in [0, 1] (the
modality's own `features`, which image modalities accept as input)."""
from __future__ import annotations

import torch

from omnivae.batch import Batch
from omnivae.train.config import AugmentConfig


def picture_names(model, batch: Batch) -> list[str]:
    """The batch's modalities that the model shows as pictures."""
    return [name for name in batch.data if model.modalities[name].pictures]


def augment_batch(model, batch: Batch, config: AugmentConfig, generator: torch.Generator | None = None) -> Batch:
    """A new Batch whose picture modalities are augmented (the others, and the masks, shared)."""
    names = picture_names(model, batch) if config.active else []
    if not names:
        return batch
    data = dict(batch.data)
    for name in names:
        x = shift_and_flip(data[name], config.shift, config.flip, generator)
        if config.noise > 0:
            x = model.modalities[name].features(x)  # floats in [0, 1]
            x = (x + config.noise * _randn(x, generator)).clamp_(0, 1)
        data[name] = x
    return Batch(data, batch.mask)


def shift_and_flip(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images [B,C,H,W] each translated by a random (dy, dx) in [-shift, shift]^2 (edge pixels
    replicated into the gap) and, with flip, mirrored left-right with probability 1/2; one
    gather for the whole batch, any dtype. Unchanged (the same tensor) when there is nothing to do."""
    if not (shift or flip) or x.numel() == 0:
        return x
    b, _, h, w = x.shape
    rows = torch.arange(h).expand(b, h)
    cols = torch.arange(w).expand(b, w)
    if shift:
        offsets = torch.randint(-shift, shift + 1, (2, b, 1), generator=generator, device=_device(generator))
        rows = (rows - offsets[0].cpu()).clamp(0, h - 1)
        cols = (cols - offsets[1].cpu()).clamp(0, w - 1)
    if flip:
        mirrored = torch.rand(b, 1, generator=generator, device=_device(generator)).cpu() < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    index = torch.arange(b, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[index, channels, rows[:, None, :, None], cols[:, None, None, :]]


def _device(generator: torch.Generator | None):
    return generator.device if generator is not None else None


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
