"""Few labels: keep `count` labels of a categorical modality, as balanced over the classes as
the data allows, and mark the rest missing (the semi-supervised setting; data config key
`labelled`, applied to the training split only)."""
from __future__ import annotations

import dataclasses

import numpy as np

from omnivae.data.raw import RawData, kind_class
from omnivae.errors import InputError


def label_modality(raw: RawData, name: str | None) -> str:
    """`name`, checked to be a categorical modality of `raw` (a kind whose values are class labels);
    None: the only such one."""
    categorical = [n for n, k in raw.kinds.items() if kind_class(k).label_targets(raw.modalities[n]) is not None]
    if name is None:
        if len(categorical) != 1:
            raise InputError(f"labelled: set labelled_modality to the label to thin out; the data has "
                             f"{len(categorical)} categorical modalities {categorical}")
        return categorical[0]
    if name not in categorical:
        raise InputError(f"labelled_modality {name!r} is not a categorical modality of the data; "
                         f"its categorical modalities are {categorical}")
    return name


def balanced_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of `count` rows of `labels` (class indices), taken round-robin over the classes
    (each class's rows in a seeded random order, the classes in a seeded random order), so every
    class gets count // K or one more unless it runs out, when the others give the rest."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = rng.permutation(len(pools))
    depth = max(len(p) for p in pools)
    rounds = [pools[c][i] for i in range(depth) for c in order if i < len(pools[c])]
    return np.sort(np.asarray(rounds[:count], dtype=np.int64))


def keep_labels(raw: RawData, count: int, name: str | None = None, seed: int = 0) -> RawData:
    """`raw` with only `count` labels of modality `name` left present (balanced_rows over the
    present ones); the others get mask False and value -1 (RawData's missing label)."""
    name = label_modality(raw, name)
    present = np.flatnonzero(raw.mask[name])
    if count > len(present):
        raise InputError(f"labelled={count}, but the training split has only {len(present)} examples with "
                         f"a {name!r} label")
    labels = kind_class(raw.kinds[name]).label_targets(raw.modalities[name])
    kept = present[balanced_rows(labels[present], count, seed)]
    mask = np.zeros(len(raw), dtype=bool)
    mask[kept] = True
    values = np.full_like(labels, -1)
    values[kept] = labels[kept]
    return dataclasses.replace(raw, modalities={**raw.modalities, name: values}, mask={**raw.mask, name: mask})
