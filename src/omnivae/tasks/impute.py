"""Impute missing modalities: each missing entry is generated from the modalities present
in its example; present entries are copied unchanged. Completed data are saved as .npz.

.npz layout (read back by `load_npz`; no pickles): one array per modality (text as a
unicode array, "" where missing), `mask__<name>` (bool), `target__<name>` (int64),
`imputed__<name>` (bool, after impute) and `__kinds__` (JSON of {name: kind}).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from omnivae.data.raw import KINDS, RawData
from omnivae.data.tensors import TensorData
from omnivae.errors import InputError


def _user_values(model, name: str, x: torch.Tensor, like):
    """Model-space generations -> the raw data's representation of that modality."""
    mod = model.modalities[name]
    numeric = isinstance(like, np.ndarray) and like.dtype.kind in "biuf"
    if mod.kind == "categorical" and numeric:
        return x.cpu().numpy().astype(like.dtype)
    out = mod.to_output(x)
    if isinstance(out, list):
        return out if not isinstance(like, np.ndarray) else np.asarray(out)
    values = out.detach().cpu().numpy()
    if isinstance(like, np.ndarray):
        values = values.reshape(len(values), *like.shape[1:])
        if like.dtype == np.uint8 and mod.kind == "image":
            return np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
        return values.astype(like.dtype)
    return values


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
                values = _user_values(model, n, gen[n][torch.from_numpy(fill)], raw.modalities[n])
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
    return RawData(modalities, dict(raw.kinds), masks, dict(raw.targets), info)


def _fit_dtype(array: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Widen a string array when generated class names are longer than its item size."""
    if array.dtype.kind == "U" and values.dtype.kind == "U" and values.dtype.itemsize > array.dtype.itemsize:
        return array.astype(values.dtype)
    return array


def save(raw: RawData, path: str | Path) -> Path:
    """Write RawData (with its imputed flags, if any) to a .npz file; text as unicode arrays."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise InputError(f"{path}: expected a file name ending in .npz")
    arrays: dict[str, np.ndarray] = {}
    for name, values in raw.modalities.items():
        if raw.kinds[name] == "text":
            arrays[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
        else:
            arrays[name] = np.asarray(values)
        arrays[f"mask__{name}"] = np.asarray(raw.mask[name], dtype=bool)
    for name, values in raw.targets.items():
        arrays[f"target__{name}"] = np.asarray(values)
    for name, flags in (raw.info.get("imputed") or {}).items():
        arrays[f"imputed__{name}"] = np.asarray(flags, dtype=bool)
    arrays["__kinds__"] = np.array(json.dumps(raw.kinds))
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a temporary file beside the target, flushed, then renamed over it (a failed or
    # killed write leaves the old file as it was, which matters most when it is the input)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def guess_kind(values: np.ndarray) -> str:
    if values.dtype.kind in "US":
        return "text"
    if values.ndim == 4 or (values.ndim == 3 and values.dtype == np.uint8):
        return "image"
    if values.ndim == 1 and values.dtype.kind in "iu":
        return "categorical"
    if values.ndim == 2:
        return "vector"
    if values.ndim == 3:
        return "signal"
    raise InputError(f"cannot tell the kind of an array of shape {values.shape} and dtype {values.dtype}")


def load_npz(path: str | Path) -> RawData:
    """Read a .npz written by `save` (or any .npz of named arrays: kinds are then guessed from
    dtypes and shapes; `mask__<name>` / `target__<name>` arrays are used when present)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} cannot be read as a .npz of plain arrays: {exc}") from None
    kinds = json.loads(str(arrays.pop("__kinds__"))) if "__kinds__" in arrays else {}
    special = ("mask__", "target__", "imputed__")
    modalities, mask, targets, imputed = {}, {}, {}, {}
    for key, value in arrays.items():
        if key.startswith("mask__"):
            mask[key[6:]] = value.astype(bool)
        elif key.startswith("target__"):
            targets[key[8:]] = value.astype(np.int64)
        elif key.startswith("imputed__"):
            imputed[key[9:]] = value.astype(bool)
        elif not key.startswith(special):
            kind = kinds.get(key) or guess_kind(value)
            if kind not in KINDS:
                raise InputError(f"{path}: modality {key!r} has unknown kind {kind!r}")
            kinds[key] = kind
            modalities[key] = [str(v) if str(v).strip() else None for v in value] if kind == "text" else value
    if not modalities:
        raise InputError(f"{path} holds no modality arrays")
    for name in modalities:
        if name not in mask and kinds[name] == "text":
            mask[name] = np.array([v is not None for v in modalities[name]], dtype=bool)
    info = {"source": "npz", "path": str(path)}
    if imputed:
        info["imputed"] = imputed
    return RawData(modalities, {n: kinds[n] for n in modalities}, mask, targets, info)
