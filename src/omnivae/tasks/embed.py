"""Embeddings: latent means of any subset of modalities, for any amount of data, saved
as .npy or Parquet."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
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
def embed(model, data, given: Sequence[str] | None = None, batch_size: int = 1024) -> np.ndarray:
    """Joint-posterior means [N, D] of the modalities in `given` (default: all the data holds).

    `data` is a TensorData or RawData (masks respected: an example with none of `given`
    present gets the prior mean), a Batch, or a dict {modality: user data}.
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
            parts = [model.encode({k: _slice(v, slice(i, i + batch_size)) for k, v in data.items()}, given=given)
                     for i in range(0, n, batch_size)]
        else:
            data = as_tensor_data(model, data)
            parts = [model.encode(data.batch(torch.arange(i, min(len(data), i + batch_size))), given=given)
                     for i in range(0, len(data), batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        return np.zeros((0, model.config.latent_dim), dtype=np.float32)
    return torch.cat(parts).cpu().numpy()


def save_embeddings(z, path: str | Path, index: Sequence | None = None) -> Path:
    """Write embeddings [N, D]: `.npy` (one array) or `.parquet` (one row per example, columns
    z_0 ... z_{D-1}, plus an `index` column when given)."""
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z, dtype=np.float32)
    if z.ndim != 2:
        raise InputError(f"embeddings: expected shape [N, D], received {z.shape}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise InputError(f"embeddings file {path}: expected a .npy or .parquet name, received {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, z)
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # optional dependency
        raise ImportError("writing Parquet needs pyarrow: pip install 'omnivae[tables]'") from exc
    columns = {}
    if index is not None:
        if len(index) != len(z):
            raise InputError(f"index: expected {len(z)} entries like the embeddings, received {len(index)}")
        columns["index"] = pa.array(list(index))
    columns.update({f"z_{j}": pa.array(z[:, j]) for j in range(z.shape[1])})
    pq.write_table(pa.table(columns), path)
    return path


def load_embeddings(path: str | Path) -> np.ndarray:
    """Read what save_embeddings wrote, as float32 [N, D]."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = sorted((c for c in table.column_names if c.startswith("z_")), key=lambda c: int(c[2:]))
    return np.stack([table.column(c).to_numpy() for c in cols], axis=1).astype(np.float32)
