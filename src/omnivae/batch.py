"""A batch: one tensor per modality plus a presence mask per modality."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from omnivae.errors import InputError


@dataclass
class Batch:
    data: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor] = field(default_factory=dict)  # bool [B]; absent key = all present

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def present(self, name: str) -> torch.Tensor:
        if name in self.mask:
            return self.mask[name]
        return torch.ones(len(self), dtype=torch.bool, device=self.data[name].device)

    def to(self, device) -> "Batch":
        """The same batch on `device` (itself when every tensor is already there)."""
        device = torch.device(device)
        tensors = [*self.data.values(), *self.mask.values()]
        if all(t.device == device for t in tensors):
            return self
        return Batch({k: v.to(device, non_blocking=True) for k, v in self.data.items()},
                     {k: m.to(device, non_blocking=True) for k, m in self.mask.items()})

    def select(self, names) -> "Batch":
        return Batch({n: self.data[n] for n in names}, {n: self.mask[n] for n in names if n in self.mask})


def presence_mask(value: Any, what: str) -> np.ndarray:
    """A user's mask -> bool array. Only True/False or 0/1 are accepted: a plain cast to bool would
    read any string, NaN or 0.5 as True, and torch's own cast fails with a bare error on strings."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):  # ragged nesting
        arr = np.asarray(None)
    if arr.dtype.kind not in "biuf" or arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        shown = f"dtype {arr.dtype}" if arr.dtype.kind != "O" else type(value).__name__
        raise InputError(f"{what} must hold True/False (or 0/1) per example, got {shown}: {str(value)[:60]}")
    return arr.astype(bool)


@dataclass
class LossOutput:
    """What every objective returns: the scalar to minimise and its detached terms."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
