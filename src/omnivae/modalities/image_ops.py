"""Operations on batches of pictures that the image kind owns: training augmentation (random
shifts, flips and pixel noise, batched on the tensors: one gather per batch, one noise draw)
and the corruptions of the anomaly benchmark (pixel noise, an occluding block)."""
from __future__ import annotations

import numpy as np
import torch

CORRUPTION_TEXT = "noise or an occluding block"


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


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Floats in [0, 1] plus Gaussian noise of `std`, clamped back into [0, 1]."""
    if generator is None:
        noise = torch.randn_like(x)
    else:
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return (x + std * noise).clamp_(0, 1)


def _device(generator: torch.Generator | None):
    return generator.device if generator is not None else None


def corrupt_pictures(values, rows: np.ndarray, rng: np.random.Generator, noise_std: float = 0.35) -> np.ndarray:
    """Pictures [N, C, H, W] (uint8, or floats in [0, 1]) with those at `rows` corrupted,
    alternately by Gaussian pixel noise (std `noise_std` of the full range) and an occluding
    block (a third to a half of each side, filled with a random grey); a new array, same dtype."""
    x = np.asarray(values)
    full = 255.0 if x.dtype == np.uint8 else 1.0
    y = x.astype(np.float32, copy=True)
    h, w = y.shape[-2:]
    for n, i in enumerate(rows):
        if n % 2 == 0:
            y[i] = y[i] + rng.normal(0.0, noise_std * full, size=y[i].shape)
        else:
            bh, bw = rng.integers(h // 3, h // 2 + 1), rng.integers(w // 3, w // 2 + 1)
            top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            y[i, ..., top:top + bh, left:left + bw] = rng.uniform(0.3, 0.8) * full
    y = np.clip(y, 0.0, full)
    return np.round(y).astype(np.uint8) if x.dtype == np.uint8 else y.astype(x.dtype)
