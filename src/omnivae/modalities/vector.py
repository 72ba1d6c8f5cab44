"""Continuous vectors [B,F] (tabular features, embeddings): MLP encoder/decoder,
Gaussian or Laplace likelihood on standardised values."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from omnivae.config import PositiveInt
from omnivae.errors import InputError
from omnivae.modalities import likelihoods
from omnivae.modalities.base import DropoutRate, ModalitySpec, StandardizedModality, check_finite, \
    flatten_codes, full_precision, mlp


class VectorSpec(ModalitySpec):
    kind: Literal["vector"] = "vector"
    dim: PositiveInt
    hidden: list[PositiveInt] = [256, 256]
    likelihood: Literal["gaussian", "laplace"] = "gaussian"
    standardize: bool = True  # learn mean/std from training data in fit()
    learn_scale: bool = True
    dropout: DropoutRate = 0.0  # nn.Dropout after every hidden activation of encoder and decoder (0: none)


class VectorModality(StandardizedModality):
    kind = "vector"
    stackable = True
    values_name = "numeric vectors"
    spec_class = VectorSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: float32 [N, D]; a row with a NaN or inf is missing

    @classmethod
    def infer_spec(cls, values, mask, class_names=None) -> dict:
        return {"dim": int(np.asarray(values).reshape(len(values), -1).shape[1])}

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        return arr.ndim in (1, 2) and arr.dtype.kind in "fiu"

    @classmethod
    def claims_values(cls, values: list) -> bool:
        """Lists of numbers, or numbers (whole numbers only once the label kind has declined them)."""
        if all(isinstance(v, list) for v in values):
            return True
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

    @classmethod
    def claims_arrow(cls, arrow_type) -> bool:
        """Floating-point columns and lists of numbers."""
        import pyarrow as pa

        return pa.types.is_floating(arrow_type) or pa.types.is_list(arrow_type) or \
            pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)

    @classmethod
    def read_arrow(cls, name, column):
        import pyarrow as pa

        if pa.types.is_floating(column.type):
            return column.cast(pa.float32()).fill_null(np.nan).to_numpy(), None, None
        return cls._list_column(name, column), None, None

    @staticmethod
    def _list_column(name: str, col) -> np.ndarray:
        """List cells of equal length -> float32 [N, D] (rows of nulls -> NaN, i.e. missing)."""
        import pyarrow as pa

        valid = col.is_valid().to_numpy(zero_copy_only=False)
        present = col.filter(col.is_valid())
        lengths = set(present.value_lengths().to_numpy(zero_copy_only=False).tolist()) if len(present) else {1}
        if len(lengths) != 1:
            raise InputError(f"list column {name!r} holds lists of different lengths {sorted(lengths)}; "
                             "a vector modality needs one length")
        (dim,) = lengths
        flat = present.flatten()
        if not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)):
            raise InputError(f"list column {name!r} holds {flat.type}, expected numbers")
        out = np.full((len(col), dim), np.nan, dtype=np.float32)
        out[valid] = flat.cast(pa.float32()).fill_null(np.nan).to_numpy().reshape(-1, dim)
        return out

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        arr = cls.numeric_rows(name, arr, 2, "[N] or [N,D]")
        arr = arr if arr.dtype == np.float32 else arr.astype(np.float32, copy=False)
        return arr, cls.finite_rows(arr), None

    @classmethod
    def read_column(cls, table, column, classes=None):
        """Numbers or lists of numbers of one length."""
        from omnivae.data.folder import vector_column

        values = vector_column(table, column)
        return values, ~np.isnan(values).any(1), None

    def __init__(self, name: str, spec: VectorSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        self.encoder = mlp([spec.dim, *spec.hidden, 2 * latent_dim], dropout=spec.dropout)
        self.decoder = mlp([latent_dim, *reversed(spec.hidden), spec.dim], dropout=spec.dropout)
        self.log_scale = nn.Parameter(torch.zeros(spec.dim), requires_grad=spec.learn_scale)
        self.register_buffer("mean", torch.zeros(spec.dim))
        self.register_buffer("std", torch.ones(spec.dim))

    def fit(self, raw) -> None:
        if not self.spec.standardize:
            return
        x = self._values(raw).double()  # float64: sums of large values stay finite
        self.mean.copy_(x.mean(0))
        std = x.std(0) if len(x) > 1 else torch.ones_like(x[0])
        self.std.copy_(torch.where(std > 1e-6, std, 1.0))  # a constant feature is only centred

    def with_channels(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.dim() == 1 and self.spec.dim == 1 else x

    def check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.spec.dim:
            raise self._error(f"expected vectors of shape [batch, {self.spec.dim}], got {list(x.shape)}")
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
            raise self._error(f"expected float values, got dtype {x.dtype}")
        check_finite(self, x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def placeholder(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.spec.dim)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_codes(z)
        out = full_precision(self.decoder(flat)).reshape(*lead, -1)  # fp32 scores under bf16 autocast
        fn = likelihoods.CONTINUOUS[self.spec.likelihood]
        return fn(out, self.features(x), self.log_scale)

    def generate(self, z: torch.Tensor, sample: bool = False, **_) -> torch.Tensor:
        out = self.decoder(z)
        if sample:
            out = out + self.log_scale.exp() * torch.randn_like(out)
        return out * self.std + self.mean

    # -- user inputs and outputs (the numeric defaults of Modality, plus scoring) -----------
    def scorer(self, raw, x: torch.Tensor, epochs: int, seed: int, cache_dir=None):
        """A small MLP per attribute on standardised vectors; generations are standardised the same way."""
        from omnivae.metrics.coherence import classifier_scorer

        inner = classifier_scorer(self.features(x.float()), raw, "mlp", epochs, seed, cache_dir=cache_dir)
        if inner is None:
            return None

        def score(gen: torch.Tensor):
            return inner(self.features(gen.float()))

        score.classifier = inner.classifier
        return score
