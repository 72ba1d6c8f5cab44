"""RawData: paired examples as a source loads them, before model preprocessing.

A source (shapes, MNIST, a folder, arrays) returns one RawData. The model's modalities
turn it into tensors (tokenising captions, scaling images) with `prepare`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnivae.errors import InputError

ROLES = ("target", "ignore")  # what a data column may be besides a modality: labels only, or skipped
PER_EXAMPLE_INFO = ("named", "references")  # info entries {name: array [N]} that follow subset and concat


def presence_mask(value: Any, what: str) -> np.ndarray:
    """A user's mask -> bool array. Only True/False or 0/1 are accepted: a plain cast to bool would
    read any string, NaN or 0.5 as True, and torch's own cast fails with a bare error on strings."""
    if hasattr(value, "detach"):  # a torch tensor (torch is not imported here: `import omnivae` stays light)
        value = value.detach().cpu()
        value = (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):  # ragged nesting
        arr = np.asarray(None)
    flags = arr.dtype == np.bool_
    numbers = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if not (flags or numbers and np.isin(arr, (0, 1)).all()):
        shown = f"dtype {arr.dtype}" if arr.dtype != object else type(value).__name__
        raise InputError(f"{what} must hold True/False (or 0/1) per example, got {shown}: {str(value)[:60]}")
    return arr.astype(bool)


def known_kinds() -> tuple[str, ...]:
    """The registered modality kinds (omnivae.modalities.MODALITY_KINDS), in registration order."""
    from omnivae.modalities import MODALITY_KINDS

    return tuple(MODALITY_KINDS)


def claiming_kinds() -> tuple[str, ...]:
    """Kinds in the order readers ask them to claim unlabelled data (omnivae.modalities.claiming_kinds:
    kinds registered by users before the built-in ones)."""
    from omnivae.modalities import claiming_kinds as order

    return order()


def label_kind() -> str:
    """The kind that reads class labels (omnivae.modalities.LABEL_KIND): "target" columns and
    columns given class names are read as it reads them."""
    from omnivae.modalities import LABEL_KIND

    return LABEL_KIND


@dataclass(frozen=True)
class ColumnUse:
    """How a reader uses a data column the user (or a schema) gave a kind or a role.
    reads: the modality kind whose class reads the values (None: the column is skipped);
    modality: whether the values become a modality (False: evaluation labels only)."""

    reads: str | None
    modality: bool = True


def column_uses() -> dict[str, ColumnUse]:
    """Every name a column may be given, with its use: each registered kind makes a modality of
    that kind; role "target" reads the column as the label kind does and keeps it as evaluation
    labels only; role "ignore" skips it."""
    roles = {"target": ColumnUse(label_kind(), modality=False), "ignore": ColumnUse(None, modality=False)}
    return {**{kind: ColumnUse(kind) for kind in known_kinds()}, **roles}


def column_use(name: str) -> ColumnUse:
    """The use of a column given `name` (a kind or a role; see column_uses)."""
    uses = column_uses()
    if not isinstance(name, str) or name not in uses:
        raise InputError(f"unknown kind {name!r}; known kinds: {list(known_kinds())}, roles: {list(ROLES)}")
    return uses[name]


def kind_class(kind: str):
    """The Modality class that reads data of `kind`."""
    from omnivae.modalities import MODALITY_KINDS

    if not isinstance(kind, str) or kind not in MODALITY_KINDS:
        raise InputError(f"unknown kind {kind!r}; known kinds: {list(MODALITY_KINDS)}")
    return MODALITY_KINDS[kind]


@dataclass
class RawData:
    """One entry per modality, all of the same length N.

    modalities: name -> np.ndarray (image uint8 [N,C,H,W] or float [0,1]; categorical
        int64 [N]; vector/signal float32 [N,D] / [N,C,L]) or list[str | None] (text).
    kinds: name -> a registered modality kind (omnivae.modalities.MODALITY_KINDS).
    mask: name -> bool [N]; False marks the modality missing for that example.
    targets: evaluation labels, name -> int64 [N] (digit, shape, colour ...).
    info: free metadata (class names per target, difficulty level, source). Per-example entries
        follow `subset` and `concat`: "named" ({attribute: bool [N]}) and "references" ({name:
        object array [N] of tuples}: every value of an example, e.g. all captions of an image, its
        modality value first; training draws one per example each epoch, caption metrics score
        against all).
    ids: per-example identifiers, name -> array [N], kept through `subset`: "index" is the
        example's row in the data as its source read it (set by `subset`; without it row i is
        example i), other entries are id columns of the source (a folder's file names).
    """

    modalities: dict[str, Any]
    kinds: dict[str, str]
    mask: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what in ("modalities", "kinds", "mask", "targets", "ids"):
            if not isinstance(getattr(self, what), Mapping):
                raise InputError(f"RawData {what} must be a dict {{name: ...}}, got "
                                 f"{type(getattr(self, what)).__name__}")
        if not self.modalities:
            raise InputError("RawData needs at least one modality")
        lengths = {name: _length(f"modality {name!r}", v) for name, v in self.modalities.items()}
        n = next(iter(lengths.values()))
        if any(v != n for v in lengths.values()):
            raise InputError(f"modalities have different numbers of examples: {lengths}")
        kinds = known_kinds()
        for name in self.modalities:
            kind = self.kinds.get(name)
            if not isinstance(kind, str) or kind not in kinds:
                raise InputError(f"modality {name!r}: kind {kind!r} is not one of {kinds}")
            if name not in self.mask:
                self.mask[name] = _default_mask(self.modalities[name])
            self.mask[name] = presence_mask(self.mask[name], f"mask of {name!r}")
            if self.mask[name].shape != (n,):
                raise InputError(f"mask of {name!r} has shape {self.mask[name].shape}, expected ({n},)")
        for name, t in self.targets.items():
            if _length(f"target {name!r}", t) != n:
                raise InputError(f"target {name!r} has {len(t)} entries, expected {n}")
        for name, v in self.ids.items():
            if _length(f"ids {name!r}", v) != n:
                raise InputError(f"ids {name!r} has {len(v)} entries, expected {n}")

    def __len__(self) -> int:
        return len(next(iter(self.modalities.values())))

    @property
    def names(self) -> list[str]:
        return list(self.modalities)

    def subset(self, index) -> "RawData":
        """The examples at `index` (an int array or slice), as a new RawData."""
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        mods = {k: _take(v, index) for k, v in self.modalities.items()}
        info = dict(self.info)
        for key in PER_EXAMPLE_INFO:  # e.g. which attributes each caption names
            if key in info:
                info[key] = {k: np.asarray(v)[index] for k, v in info[key].items()}
        ids = {k: np.asarray(v)[index] for k, v in self.ids.items()}
        ids["index"] = np.asarray(self.ids.get("index", np.arange(len(self))))[index]
        return RawData(mods, dict(self.kinds), {k: m[index] for k, m in self.mask.items()},
                       {k: t[index] for k, t in self.targets.items()}, info, ids)

    @classmethod
    def concat(cls, parts: list["RawData"]) -> "RawData":
        """The examples of several RawData of the same modalities, one after the other (e.g. a
        run's train, validation and test splits as one data set); per-example info and ids follow."""
        parts = [p for p in parts if len(p)] or parts[:1]
        first = parts[0]

        def join(values: list):
            return np.concatenate(values) if isinstance(values[0], np.ndarray) else [v for p in values for v in p]

        info = dict(first.info)
        for key in PER_EXAMPLE_INFO:
            if key in info:
                info[key] = {k: np.concatenate([np.asarray(p.info[key][k]) for p in parts]) for k in info[key]}
        ids = {k: np.concatenate([np.asarray(p.ids[k]) for p in parts]) for k in first.ids if k != "index"}
        ids["index"] = np.concatenate([np.asarray(p.ids.get("index", np.arange(len(p)))) for p in parts])
        return cls({k: join([p.modalities[k] for p in parts]) for k in first.modalities}, dict(first.kinds),
                   {k: np.concatenate([p.mask[k] for p in parts]) for k in first.mask},
                   {k: np.concatenate([p.targets[k] for p in parts]) for k in first.targets}, info, ids)

    def split(self, fractions: tuple[float, ...] = (0.9, 0.1), seed: int = 0) -> list["RawData"]:
        """Random split into parts of the given fractions (they must sum to 1)."""
        return [self.subset(rows) for rows in split_indices(len(self), fractions, seed)]


def split_indices(n: int, fractions: tuple[float, ...], seed: int = 0) -> list[np.ndarray]:
    """The rows of each part of `RawData.split` on n examples (a streamed folder splits the same way)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise InputError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum((0.0, *fractions)) * n).astype(int)
    return [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _length(what: str, values) -> int:
    """Number of examples in an array or list; None, a number, a 0-d array or one string has none."""
    if isinstance(values, (str, bytes, Mapping)) or getattr(values, "ndim", 1) == 0 or not hasattr(values, "__len__"):
        raise InputError(f"{what}: expected an array or a list with one entry per example, got "
                         f"{type(values).__name__} {str(values)[:40]!r}")
    return len(values)


def _take(values, index: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[index]
    return [values[i] for i in index]


def _default_mask(values) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return np.ones(len(values), dtype=bool)
    return np.array([v is not None and str(v).strip() != "" for v in values], dtype=bool)
