"""The Modality contract: one object owns a data kind's encoder, decoder, likelihood,
preprocessing and input checks.

Shapes: `encode(x[B,...]) -> Gaussian[B,D]`; `log_likelihood(z[S,B,D], x[B,...]) -> [S,B]`
(the decoder runs once on all S*B codes); `generate(z[N,D]) -> x[N,...]` in model space;
`prepare(raw) -> tensor` turns user data into model space and `to_output` turns it back.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from omnivae.config import NonNegativeFloat, StrictModel
from omnivae.distributions import Gaussian, clamp_logvar
from omnivae.errors import InputError


class ModalitySpec(StrictModel):
    """Options shared by every modality kind."""

    kind: str
    # multiplies this modality's log-likelihood in every objective; None (the default) lets the
    # model choose it from the data dimensions (ModelConfig.rescale) and record the number it chose
    weight: NonNegativeFloat | None = None


class Modality(nn.Module):
    kind: ClassVar[str]
    spec_class: ClassVar[type[ModalitySpec]]

    def __init__(self, name: str, spec: ModalitySpec, latent_dim: int):
        super().__init__()
        self.name, self.spec, self.latent_dim = name, spec, latent_dim

    @classmethod
    def from_data(cls, name: str, spec: ModalitySpec, latent_dim: int, raw: Any) -> "Modality":
        """Build and fit on training data (text overrides this to train its tokenizer first)."""
        modality = cls(name, spec, latent_dim)
        modality.fit(raw)
        return modality

    # -- preprocessing and checks ---------------------------------------------------
    def fit(self, raw: Any) -> None:
        """Learn preprocessing state from training data (tokenizer, scaling). Default: none."""

    def prepare(self, raw: Any) -> torch.Tensor:
        """User data -> model tensor, validated."""
        x = torch.as_tensor(raw)
        self.check(x)
        return x

    def accept(self, value: Any) -> torch.Tensor:
        """What the user API calls on user data: prepare it (already-prepared tensors too)."""
        return self.prepare(value)

    def check(self, x: torch.Tensor) -> None:
        """Raise InputError naming the modality, what was expected and what was received."""

    def to_output(self, x: torch.Tensor) -> Any:
        """Model tensor -> what a user wants back (images in [0,1], captions as strings)."""
        return x

    def placeholder(self, n: int) -> torch.Tensor:
        """A batch of n dummy inputs for examples where this modality is missing."""
        raise NotImplementedError

    def data_dim(self) -> int:
        """How many values one example's log-likelihood scores (pixels x channels, token positions,
        1 for a class label): the size that likelihood rescaling divides by."""
        return max(1, math.prod(self.placeholder(1).shape[1:]))

    # -- networks ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Gaussian:
        # under bf16 autocast the networks run in bf16, posteriors and scores in fp32
        mu, logvar = full_precision(self.encoder(self.features(x))).chunk(2, dim=-1)
        return Gaussian(mu, clamp_logvar(logvar))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Model tensor -> encoder input (e.g. uint8 pixels -> floats)."""
        return x

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, z: torch.Tensor, **options) -> torch.Tensor:
        raise NotImplementedError

    # -- files saved next to the weights (tokenizers); JSON text only ------------------
    def extra_files(self) -> dict[str, str]:
        return {}

    def load_extra_files(self, folder: Path) -> None:
        """Read what extra_files wrote (called before the weights are loaded)."""

    def _error(self, message: str) -> InputError:
        return InputError(f"modality {self.name!r} ({self.kind}): {message}")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 network outputs (autocast) -> fp32, so posteriors and scores keep full precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def numeric_array(modality: Modality, raw: Any, what: str) -> np.ndarray:
    """Array-like user data -> a numeric numpy array (bool/int/float), else an InputError saying what came in,
    so strings, None, ragged lists or complex values never reach numpy's or torch's own errors."""
    if raw is None or isinstance(raw, (str, bytes, bytearray, Mapping, set)):
        shown = f" {raw[:20]!r}" if isinstance(raw, (str, bytes, bytearray)) else ""
        raise modality._error(f"expected {what}, got {type(raw).__name__}{shown}")
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise modality._error(f"expected {what}, got a ragged sequence ({str(exc)[:80]})") from None
    if arr.dtype.kind not in "biuf":
        got = {"U": "strings", "S": "bytes", "c": "complex numbers", "O": "mixed Python objects (None, "
               "strings, nested lists or ints beyond int64)"}.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise modality._error(f"expected {what}, got {got}")
    return arr if arr.flags.c_contiguous else arr.copy()  # torch refuses negative strides (np.flip)


def float_array(modality: Modality, raw: Any, what: str) -> np.ndarray:
    """numeric_array as floats: 8-byte types become float64 (huge values stay finite), the rest float32."""
    arr = numeric_array(modality, raw, what)
    return arr.astype(np.float64 if arr.dtype.itemsize == 8 else np.float32, copy=False)


def check_finite(modality: Modality, x: torch.Tensor) -> None:
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise modality._error(f"input holds {bad} NaN or infinite values")


MAX_STANDARD_UNITS = 1e6  # beyond this, codes and the KL term (mu^2) head for float32 overflow


def check_standardized(modality: Modality, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Refuse values absurdly far (> MAX_STANDARD_UNITS standard deviations) from the training data:
    the network would turn them into overflowing codes and losses instead of an answer."""
    if not x.numel():
        return
    z = ((x - mean.to(x.device)) / std.to(x.device)).abs()  # an overflow gives inf: refused, rightly
    worst = float(z.max())
    if not worst <= MAX_STANDARD_UNITS:
        row = int((z > MAX_STANDARD_UNITS).reshape(len(x), -1).any(1).nonzero()[0])
        raise modality._error(
            f"values lie up to {worst:.3g} standard deviations from the training mean (the limit is "
            f"{MAX_STANDARD_UNITS:.0e}; first such row: {row}); check the units of the input, or train on "
            "data that covers this range")


class StandardizedModality(Modality):
    """Real-valued data standardised with a mean and std learned from training data (vector,
    signal): the shared input path. Subclasses set `values_name`, their `mean`/`std` buffers,
    `check` and, where a missing channel axis may be added, `with_channels`."""

    values_name = "numeric values"

    def prepare(self, raw) -> torch.Tensor:
        """Checked like any input, and refused if absurdly far from the training data (it would overflow)."""
        x = self._values(raw)
        check_standardized(self, x, self.mean, self.std)
        return x.float()

    def _values(self, raw) -> torch.Tensor:
        x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(float_array(self, raw, self.values_name))
        x = self.with_channels(x)
        self.check(x)
        return x

    def with_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Add an axis the user may leave out (a single feature or channel); default: none."""
        return x


def mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with activations between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def flatten_codes(z: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """[S,B,D] (or any leading shape) -> ([S*B, D], leading shape)."""
    return z.reshape(-1, z.shape[-1]), tuple(z.shape[:-1])
