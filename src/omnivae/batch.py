"""A batch: one tensor per modality plus a presence mask per modality."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from omnivae.data.raw import presence_mask  # noqa: F401 (used here and by models)


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


@dataclass
class LossOutput:
    """What every objective returns: the scalar to minimise and its detached terms."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
