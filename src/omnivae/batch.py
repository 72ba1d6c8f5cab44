"""A batch: one tensor per modality plus a presence mask per modality."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


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

    def select(self, names) -> "Batch":
        return Batch({n: self.data[n] for n in names}, {n: self.mask[n] for n in names if n in self.mask})


@dataclass
class LossOutput:
    """What every objective returns: the scalar to minimise and its detached terms."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
