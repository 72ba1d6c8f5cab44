"""Embeddings: latent means of any subset of modalities, for any amount of data, saved as
.npy (the matrix alone), .npz, .csv or .parquet (the matrix with the ids and labels to join on)."""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from omnivae.batch import Batch
from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.errors import InputError


def as_tensor_data(model, data) -> TensorData:
    """TensorData passes through; RawData is prepared with the model's preprocessing."""
    if isinstance(data, TensorData):
        return data
    if isinstance(data, RawData):
        return TensorData.from_raw(model, data)
    raise TypeError(f"expected TensorData or RawData, got {type(data).__name__}")


def _slice(value, index: slice):
    return value[index] if not isinstance(value, str) else value


def _length(data: Mapping) -> int:
    sizes = {k: 1 if isinstance(v, str) else len(v) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"modalities have different batch sizes: {sizes}")
    return next(iter(sizes.values()))


@torch.no_grad()
def embed(model, data, given: Sequence[str] | None = None, batch_size: int = 1024,
          progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Joint-posterior means [N, D] of the modalities in `given` (default: all the data holds).

    `data` is a TensorData or RawData (masks respected: an example with none of `given`
    present gets the prior mean), a Batch, or a dict {modality: user data}.
    progress: called as progress(examples done, examples in all) after each batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected a positive int, received {batch_size!r}")
    if given is not None:
        given = model.check_names(given, "given")
    was_training = model.training
    model.eval()
    try:
        if isinstance(data, Batch):
            return model.encode(data, given=given).cpu().numpy()
        if isinstance(data, Mapping):
            n = _length(data)
            batches = ({k: _slice(v, slice(i, i + batch_size)) for k, v in data.items()}
                       for i in range(0, n, batch_size))
        else:
            data = as_tensor_data(model, data)
            n = len(data)
            batches = (data.batch(torch.arange(i, min(n, i + batch_size))) for i in range(0, n, batch_size))
        parts = []
        for batch in batches:
            parts.append(model.encode(batch, given=given))
            if progress is not None:
                progress(min(n, len(parts) * batch_size), n)
    finally:
        model.train(was_training)
    if not parts:
        return np.zeros((0, model.config.latent_dim), dtype=np.float32)
    return torch.cat(parts).cpu().numpy()


def join_columns(raw: RawData) -> dict:
    """What an embeddings file carries besides the matrix, so rows join back to the data:
    index (each example's row in the data as its source read it, see RawData.ids), id (the
    data's id column, e.g. a folder's file names; None if it has none), targets and class names."""
    if not isinstance(raw, RawData):
        raise TypeError(f"expected RawData, got {type(raw).__name__}")
    ids = [k for k in raw.ids if k != "index"]
    return {"index": np.asarray(raw.ids.get("index", np.arange(len(raw)))),
            "id": np.asarray(raw.ids[ids[0]]) if ids else None,
            "targets": {k: np.asarray(t) for k, t in raw.targets.items()},
            "classes": {k: v for k, v in raw.info.get("classes", {}).items() if k in raw.targets}}


SUFFIXES = (".npy", ".npz", ".csv", ".parquet")


def save_embeddings(z, path: str | Path, index: Sequence | None = None, id: Sequence | None = None,
                    targets: Mapping[str, Sequence] | None = None,
                    classes: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write embeddings [N, D] and, beside them, what joins them to the data (all optional):
    index (row numbers), id (the data's ids) and targets ({name: int labels [N]}, -1 = missing).

    .npy: the matrix alone. .npz: arrays `embeddings`, `index`, `id`, `target__<name>` (int64)
    and `classes__<name>` (class names, when known). .csv / .parquet: one row per example,
    columns index, id, target__<name> (the class name when known, else the integer; empty if
    missing), then z_0 ... z_{D-1}.
    """
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z, dtype=np.float32)
    if z.ndim != 2:
        raise InputError(f"embeddings: expected shape [N, D], received {z.shape}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"embeddings file {path}: expected a name ending in {', '.join(SUFFIXES)}, "
                         f"received {path.suffix!r}")
    extra = {"index": index, "id": id, **{f"target__{k}": v for k, v in (targets or {}).items()}}
    extra = {k: np.asarray(list(v) if not isinstance(v, np.ndarray) else v) for k, v in extra.items() if v is not None}
    for key, values in extra.items():
        if len(values) != len(z):
            raise InputError(f"{key}: expected {len(z)} entries like the embeddings, received {len(values)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, z)
        return path
    names = {k: [str(c) for c in v] for k, v in (classes or {}).items() if k in (targets or {}) and v}
    if suffix == ".npz":
        np.savez(path, embeddings=z, **extra, **{f"classes__{k}": np.array(v, dtype=str) for k, v in names.items()})
        return path
    columns = {k: _cells(v, names.get(k[len("target__"):]), k.startswith("target__")) for k, v in extra.items()}
    columns.update({f"z_{j}": z[:, j].tolist() for j in range(z.shape[1])})
    if suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values()) if columns else [])
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # optional dependency
        raise ImportError("writing Parquet needs pyarrow: pip install 'omnivae[tables]'") from exc
    table = pa.table({k: pa.array(v, type=pa.float32()) if k.startswith("z_") else pa.array(v)
                      for k, v in columns.items()})
    pq.write_table(table, path)
    return path


def _cells(values: np.ndarray, names: list[str] | None, labels: bool) -> list:
    """A table column; labels become class names when known, None (an empty cell) where missing."""
    if not labels:
        return values.tolist()
    return [None if v < 0 else names[v] if names and v < len(names) else str(v) if names else v
            for v in values.astype(np.int64).tolist()]


def load_embeddings(path: str | Path) -> np.ndarray:
    """Read the matrix of what save_embeddings wrote, as float32 [N, D]."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return f["embeddings"]
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        cols = sorted((c for c in (rows[0] if rows else {}) if c.startswith("z_")), key=lambda c: int(c[2:]))
        return np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float32).reshape(len(rows), len(cols))
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = sorted((c for c in table.column_names if c.startswith("z_")), key=lambda c: int(c[2:]))
    return np.stack([table.column(c).to_numpy() for c in cols], axis=1).astype(np.float32)
