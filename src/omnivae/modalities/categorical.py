"""Class labels [B] (int64): one-hot MLP encoder, softmax decoder."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from omnivae.config import PositiveInt
from omnivae.modalities import likelihoods
from omnivae.modalities.base import Modality, ModalitySpec, flatten_codes, full_precision, mlp, numeric_array

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class CategoricalSpec(ModalitySpec):
    kind: Literal["categorical"] = "categorical"
    num_classes: int
    classes: list[str] | None = None  # names; lets users pass strings
    hidden: list[PositiveInt] = [128]


class CategoricalModality(Modality):
    kind = "categorical"
    spec_class = CategoricalSpec

    def __init__(self, name: str, spec: CategoricalSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        if spec.num_classes < 2:
            raise self._error(f"num_classes must be at least 2, got {spec.num_classes}")
        if spec.classes is not None and len(spec.classes) != spec.num_classes:
            raise self._error(f"{len(spec.classes)} class names for num_classes={spec.num_classes}")
        self.encoder = mlp([spec.num_classes, *spec.hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(spec.hidden), spec.num_classes])

    def prepare(self, raw) -> torch.Tensor:
        if isinstance(raw, np.ndarray) and raw.dtype.kind == "U":
            raw = raw.tolist()
        if isinstance(raw, (list, tuple)) and any(isinstance(r, str) for r in raw):
            raw = self._class_indices(raw)
        if isinstance(raw, torch.Tensor):
            x = raw
        else:
            arr = numeric_array(self, raw, "integer class labels or class names")
            if arr.dtype.kind == "u":  # torch lacks most uint16-64 ops; int64 holds every valid label
                if arr.size and arr.max() >= self.spec.num_classes:
                    raise self._error(f"labels must lie in 0..{self.spec.num_classes - 1}, got up to {arr.max()}")
                arr = arr.astype(np.int64)
            x = torch.as_tensor(arr)
        self.check(x)
        return x.long()

    def _class_indices(self, raw) -> list[int]:
        """Class names -> indices; a list mixing names with other values is refused, not guessed at."""
        odd = [r for r in raw if not isinstance(r, str)]
        if odd:
            raise self._error(f"labels mix class names with other values ({odd[:3]!r}); pass all names "
                              "or all integer indices")
        names = self.spec.classes or []
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise self._error(f"unknown class names {unknown[:5]}; known: {names}")
        return [names.index(r) for r in raw]

    def check(self, x: torch.Tensor) -> None:
        if x.dim() != 1:
            raise self._error(f"expected labels of shape [batch], got {list(x.shape)}")
        if not (x.is_floating_point() or x.dtype == torch.bool or x.dtype in INTEGER_DTYPES):
            raise self._error(f"expected integer (or whole float) labels, got dtype {x.dtype}")
        if x.is_floating_point() or x.dtype == torch.bool:
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise self._error("labels hold NaN or infinite values")
            if x.is_floating_point() and not torch.equal(x, x.round()):
                raise self._error(f"labels must be integers, got dtype {x.dtype} with fractions")
        if x.numel() and (x.min() < 0 or x.max() >= self.spec.num_classes):
            raise self._error(f"labels must lie in 0..{self.spec.num_classes - 1}, got range "
                              f"{int(x.min())}..{int(x.max())}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x, self.spec.num_classes).float()

    def placeholder(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_codes(z)
        return likelihoods.categorical(full_precision(self.decoder(flat)).reshape(*lead, -1), x)

    def probabilities(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.decoder(z), -1)

    def generate(self, z: torch.Tensor, sample: bool = False, **_) -> torch.Tensor:
        p = self.probabilities(z)
        return torch.multinomial(p, 1).squeeze(-1) if sample else p.argmax(-1)

    def to_output(self, x: torch.Tensor):
        if self.spec.classes is None:
            return x
        return [self.spec.classes[i] for i in x.tolist()]
