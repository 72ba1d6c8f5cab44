"""Class labels [B] (int64): one-hot MLP encoder, softmax decoder."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from omnivae.config import PositiveInt
from omnivae.errors import InputError
from omnivae.modalities import likelihoods
from omnivae.modalities.base import DropoutRate, Modality, ModalitySpec, flatten_codes, full_precision, mlp, \
    numeric_array

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class CategoricalSpec(ModalitySpec):
    kind: Literal["categorical"] = "categorical"
    num_classes: int
    classes: list[str] | None = None  # names; lets users pass strings
    hidden: list[PositiveInt] = [128]
    dropout: DropoutRate = 0.0  # nn.Dropout after every hidden activation of encoder and decoder (0: none)


class CategoricalModality(Modality):
    kind = "categorical"
    votes = True  # generation from the conditional prior decodes the class its draws agree on
    continuous_features = False
    spec_class = CategoricalSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: int64 [N] class indices, -1 where missing; class names in info["classes"]
    @classmethod
    def label_targets(cls, values) -> np.ndarray:
        """Class indices are labels: evaluation targets as they are."""
        return np.asarray(values, dtype=np.int64).copy()

    @classmethod
    def infer_spec(cls, values, mask, class_names=None) -> dict:
        present = np.asarray(values)[mask]
        spec = {"num_classes": len(class_names) if class_names else int(present.max()) + 1}
        if class_names:
            spec["classes"] = list(class_names)
        return spec

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        return arr.ndim == 1 and arr.dtype.kind in "iub"

    @classmethod
    def claims_values(cls, values: list) -> bool:
        """True/False; or whole numbers or one-word strings that repeat (few distinct values)."""
        from omnivae.data.folder import few_distinct

        if all(isinstance(v, bool) for v in values):
            return True
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return few_distinct(values)
        return all(isinstance(v, str) for v in values) and few_distinct(values) and \
            not any(any(c.isspace() for c in v.strip()) for v in values)

    @classmethod
    def claims_arrow(cls, arrow_type) -> bool:
        """Dictionary-encoded (pandas categories), integer and boolean columns."""
        import pyarrow as pa

        return pa.types.is_dictionary(arrow_type) or pa.types.is_integer(arrow_type) or \
            pa.types.is_boolean(arrow_type)

    @classmethod
    def read_arrow(cls, name, column):
        import pyarrow as pa

        if pa.types.is_dictionary(column.type):
            names = [str(c) for c in column.dictionary.to_pylist()]
            return column.indices.fill_null(-1).to_numpy().astype(np.int64), names, None
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False), None, None  # float with NaN if nulls

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        """Integer indices (-1 or NaN: missing) or class names (None or "": missing)."""
        if isinstance(arr, list) or arr.dtype.kind == "U":  # names -> indices
            labels = [None if v is None or not str(v).strip() else str(v) for v in list(arr)]
            names = [str(c) for c in classes] if classes else sorted({v for v in labels if v is not None})
            index = {c: k for k, c in enumerate(names)}
            bad = next(((i, v) for i, v in enumerate(labels) if v is not None and v not in index), None)
            if bad:
                raise InputError(f"array {name!r} row {bad[0]}: label {bad[1]!r} is not one of the classes {names}")
            out = np.array([-1 if v is None else index[v] for v in labels], dtype=np.int64)
            return out, out >= 0, names
        if arr.ndim != 1 or arr.dtype.kind not in "iubf":
            raise InputError(f"categorical array {name!r} must be 1-D integers, got shape {list(arr.shape)} "
                             f"dtype {arr.dtype}")
        if arr.dtype.kind == "f":
            if not np.all(np.isnan(arr) | (arr == np.round(arr))):
                raise InputError(f"categorical array {name!r} holds fractions; expected class indices")
            arr = np.where(np.isnan(arr), -1, arr)
        out = np.asarray(arr).astype(np.int64)
        if (out < -1).any():
            raise InputError(f"categorical array {name!r} holds {int(out.min())}; class indices are >= 0 "
                             "(-1 marks a missing label)")
        names = [str(c) for c in classes] if classes else None
        if names and out.max(initial=-1) >= len(names):
            row = int(np.argmax(out >= len(names)))
            raise InputError(f"array {name!r} row {row}: label {int(out[row])} is outside the "
                             f"{len(names)} declared classes {names}")
        return out, out >= 0, names

    @classmethod
    def read_column(cls, table, column, classes=None):
        from omnivae.data.folder import categorical_column

        values, names = categorical_column(table, column, classes)
        return values, values >= 0, names

    @classmethod
    def stack_values(cls, column: list) -> np.ndarray:
        return np.asarray(column, dtype=np.int64)

    @classmethod
    def summarize(cls, values, present, class_names=None) -> dict:
        """Number of classes and the count of each (by name when the data names them)."""
        labels = np.asarray(values)[present]
        found, counts = np.unique(labels, return_counts=True)
        label = (lambda v: class_names[v] if class_names and 0 <= v < len(class_names) else str(v))
        return {"num_classes": len(class_names) if class_names else len(found),
                "counts": {label(int(v)): int(c) for v, c in zip(found, counts)}}

    @classmethod
    def summary_line(cls, entry: dict) -> str:
        top = sorted(entry["counts"].items(), key=lambda kv: -kv[1])[:5]
        more = ", ..." if len(entry["counts"]) > 5 else ""
        return f"{entry['num_classes']} classes: " + ", ".join(f"{k}: {v}" for k, v in top) + more

    def to_raw(self, x: torch.Tensor, like):
        """Indices when the data holds numbers, else class names."""
        if isinstance(like, np.ndarray) and like.dtype.kind in "biuf":
            return x.cpu().numpy().astype(like.dtype)
        return super().to_raw(x, like)

    def __init__(self, name: str, spec: CategoricalSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        if spec.num_classes < 2:
            raise self._error(f"num_classes must be at least 2, got {spec.num_classes}")
        if spec.classes is not None and len(spec.classes) != spec.num_classes:
            raise self._error(f"{len(spec.classes)} class names for num_classes={spec.num_classes}")
        self.encoder = mlp([spec.num_classes, *spec.hidden, 2 * latent_dim], dropout=spec.dropout)
        self.decoder = mlp([latent_dim, *reversed(spec.hidden), spec.num_classes], dropout=spec.dropout)

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

    # -- user inputs and outputs ---------------------------------------------------------
    def figure_items(self, outputs) -> list[str]:
        """Class names (or indices) as short texts."""
        return [self.describe(v) for v in (outputs.tolist() if isinstance(outputs, torch.Tensor) else outputs)]

    def read_cli(self, values: list[str]):
        """Class names (with declared classes) or integer indices."""
        if self.spec.classes:
            return [int(v) if v.lstrip("-").isdigit() else v for v in values]
        bad = next((v for v in values if not v.strip().lstrip("-").isdigit()), None)
        if bad is not None:
            raise self._error(f"expected an integer class index, got {bad!r}")
        return [int(v) for v in values]

    def read_json(self, values: list, where: list[str], limits):
        for w, v in zip(where, values):
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise InputError(f"{w}: modality {self.name!r} is categorical: expected a class index or name")
        return list(values)

    @classmethod
    def describe(cls, value) -> str:
        return str(value)

    def write_items(self, items, folder, stem: str) -> dict:
        return {"values": [self.json_item(v) for v in items]}

    def scorer(self, raw, x: torch.Tensor, epochs: int, seed: int, cache_dir=None):
        """Generated labels are their own prediction for every attribute they equal in the data."""
        from omnivae.metrics.coherence import varied_targets

        values = x.cpu().numpy()
        same = [t for t in varied_targets(raw) if np.array_equal(values, raw.targets[t])]
        return (lambda gen: {t: gen for t in same}) if same else None
