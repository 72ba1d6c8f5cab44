"""Impute missing modalities: each missing entry is generated from the modalities present
in its example; present entries are copied unchanged. Completed data are saved as .npz in
omnivae's arrays layout (omnivae.data.arrays: one array per modality, `mask__<name>`,
`target__<name>`, `imputed__<name>`, `__kinds__`, `__classes__`; no pickles), which
`load_arrays` (and so `omnivae train --data FILE.npz`) reads back exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnivae.data.arrays import load_arrays, save_npz
from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.errors import InputError


@torch.no_grad()
def impute(model, raw: RawData, batch_size: int = 512, mean: bool = True, **options) -> RawData:
    """A copy of `raw` where every missing entry of a model modality is generated from the
    present ones (posterior mean decoded, or a draw with mean=False). Masks become True;
    `info["imputed"][name]` marks the entries that were filled."""
    if not isinstance(raw, RawData):
        raise TypeError(f"impute expects a RawData, received {type(raw).__name__}")
    names = [n for n in model.names if n in raw.modalities]
    if not names:
        raise InputError(f"the data has none of the model's modalities {model.names}; it has {raw.names}")
    data = TensorData.from_raw(model, raw)
    modalities = {k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in raw.modalities.items()}
    masks = {k: m.copy() for k, m in raw.mask.items()}
    imputed = {n: ~raw.mask[n] for n in names}
    rows = np.nonzero(np.any([imputed[n] for n in names], axis=0))[0]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            batch = data.batch(torch.from_numpy(idx))
            targets = [n for n in names if imputed[n][idx].any()]
            gen = model.generate(batch, targets=targets, mean=mean, raw=True, **options)
            for n in targets:
                fill = imputed[n][idx]
                values = model.modalities[n].to_raw(gen[n][torch.from_numpy(fill)], raw.modalities[n])
                where = idx[fill]
                if isinstance(modalities[n], np.ndarray):
                    modalities[n] = _fit_dtype(modalities[n], values)
                    modalities[n][where] = values
                else:
                    for i, v in zip(where, values):
                        modalities[n][i] = v
    finally:
        model.train(was_training)
    for n in names:
        masks[n] = np.ones(len(raw), dtype=bool)
    info = {**raw.info, "imputed": imputed}
    return RawData(modalities, dict(raw.kinds), masks, dict(raw.targets), info, dict(raw.ids))


def _fit_dtype(array: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Widen a string array when generated class names are longer than its item size."""
    strings = np.issubdtype(array.dtype, np.str_) and np.issubdtype(values.dtype, np.str_)
    if strings and values.dtype.itemsize > array.dtype.itemsize:
        return array.astype(values.dtype)
    return array


def save(raw: RawData, path: str | Path) -> Path:
    """Write RawData (with its imputed flags, if any) to a .npz file, atomically; see
    omnivae.data.arrays.save_npz."""
    return save_npz(raw, path)


def load_npz(path: str | Path) -> RawData:
    """Read an .npz written by `save` (or any .npz of named arrays): omnivae.data.arrays.load_arrays."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    return load_arrays(path)
