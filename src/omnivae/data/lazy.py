"""Streaming an image folder that does not fit in memory: pixels are read from disk in
`__getitem__`, so DataLoader workers decode them in parallel.

The in-memory path (`load_folder` -> `TensorData`, one tensor slice per batch) is the fast
default; use this only when the images do not fit in RAM. Metadata handling is the same as
`load_folder` (same kinds, classes, missing-data rules and warnings), done once up front from
the metadata file and the image headers, without decoding pixels.

    data = LazyImageFolder("my_folder", image_size=64)
    model = build_model(resolve_model_config(cfg, data.to_raw(range(2000))), data.to_raw(range(2000)))
    loader = lazy_loader(data, model, batch_size=128, shuffle=True, num_workers=4)

`omnivae train` does this with `data.stream: true` (run.py): the model is fitted on
`data.stream_sample` training rows, and `LazyRows` gives the training and validation rows
batch by batch to the same loaders as in-memory data.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from omnivae.batch import Batch
from omnivae.data.folder import DataWarning, is_missing, plan_folder, read_image
from omnivae.data.raw import RawData, kind_class
from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError


class LazyImageFolder(Dataset):
    """An ImageFolder + metadata.jsonl/csv folder; item i is (values, present) for row i.

    values: name -> uint8 [C,H,W] image (zeros if missing), caption (None if missing), class
    index (-1 if missing) or float32 [D] vector (NaN if missing); present: name -> bool.
    Arguments are those of `omnivae.data.folder.load_folder`.
    """

    def __init__(self, path, image_size: int | None = None, resize: str = "resize", kinds: dict | None = None,
                 image_column: str = "file_name", classes: dict | None = None, mode: str | None = None):
        plan = plan_folder(path, image_size, resize, kinds, image_column, classes, mode)
        rows = np.flatnonzero(plan.finish())
        self.kinds, self.info = dict(plan.kinds), plan.info()
        # per-row strings packed into buffers (PackedStrings): a list of 200,000 Python objects
        # would cost ~300 MB here, and forked workers copy the pages whose reference counts they touch
        self.paths = {n: PackedStrings(c.paths[i] if c.ok[i] else None for i in rows) for n, c in plan.images.items()}
        self.image_format = {n: (c.mode, c.size, c.shape) for n, c in plan.images.items()}
        self.values = {n: (v[rows] if isinstance(v, np.ndarray) else PackedStrings.or_list([v[i] for i in rows]))
                       for n, v in plan.modalities.items()}
        self.mask = {n: m[rows] for n, m in plan.mask.items()}
        self.targets = {n: t[rows] for n, t in plan.targets.items()}
        self.metadata_name, self.lines = plan.table.file.name, np.asarray(plan.table.lines, dtype=np.int64)[rows]
        files = [plan.table.rows[i].get(image_column) for i in rows]  # ids as load_folder keeps them
        self.ids = {"index": rows, image_column: np.array(["" if is_missing(f) else str(f).strip() for f in files],
                                                          dtype=str)}

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, i: int) -> str:
        """Row i's place in the metadata file, for messages."""
        return f"{self.metadata_name} line {self.lines[i]}"

    def __getitem__(self, i: int) -> tuple[dict[str, Any], dict[str, bool]]:
        values, present = {}, {}
        for name, paths in self.paths.items():
            mode, size, shape = self.image_format[name]
            values[name], present[name] = np.zeros(shape, dtype=np.uint8), False
            path = paths[i]
            if path is not None:
                path = Path(path)
                try:
                    values[name], present[name] = read_image(path, mode, size), True
                except OSError as exc:
                    warnings.warn(f"image file {path.name!r} ({self.where(i)}) is unreadable ({exc}); "
                                  "image marked missing for that row", DataWarning, stacklevel=2)
        for name, v in self.values.items():
            values[name], present[name] = v[i], bool(self.mask[name][i])
        return values, present

    def to_raw(self, index=None) -> RawData:
        """The rows at `index` (default: all) read into memory, e.g. a sample to build a model on."""
        index = range(len(self)) if index is None else index
        raw = items_to_raw([self[int(i)] for i in index], self.kinds, self.info)
        rows = np.asarray(index, dtype=np.int64)
        raw.targets.update({n: t[rows] for n, t in self.targets.items()})
        raw.ids.update({n: v[rows] for n, v in self.ids.items()})
        return raw

    def collate(self, model) -> "BatchCollate":
        return BatchCollate(model, self.kinds, self.info)


class PackedStrings:
    """Strings (None where missing) as one UTF-8 buffer and end offsets: no Python object per
    row, so memory is the text itself and forked DataLoader workers share it untouched."""

    def __init__(self, items):
        encoded = [None if s is None else str(s).encode("utf-8", "surrogatepass") for s in items]
        self.missing = np.array([e is None for e in encoded], dtype=bool)
        self.ends = np.cumsum([0 if e is None else len(e) for e in encoded], dtype=np.int64)
        self.buffer = np.frombuffer(b"".join(e for e in encoded if e is not None), dtype=np.uint8)

    @classmethod
    def or_list(cls, values: list):
        """Packed if every value is a string or None (captions); otherwise the list as given."""
        return cls(values) if all(v is None or isinstance(v, str) for v in values) else values

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str | None:
        if self.missing[i]:
            return None
        start = int(self.ends[i - 1]) if i else 0
        return self.buffer[start:int(self.ends[i])].tobytes().decode("utf-8", "surrogatepass")


class LazyRows(Dataset):
    """Rows `rows` of a LazyImageFolder, prepared by `model`'s modalities. Reading a batch
    (`__getitems__`, called in the DataLoader's workers) gives one Batch, as TensorData does,
    so the training loaders (ResumableLoader, batch_loader) take either."""

    def __init__(self, folder: LazyImageFolder, rows, model):
        self.folder, self.rows = folder, np.asarray(rows, dtype=np.int64)
        self.collate = folder.collate(model)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([i])

    def __getitems__(self, indices) -> Batch:
        return self.collate([self.folder[int(self.rows[i])] for i in indices])


def open_stream(options: dict[str, Any]) -> LazyImageFolder:
    """The folder source's options (path, image_size, ...) opened lazily; ConfigError if they do not fit."""
    try:
        inspect.signature(LazyImageFolder).bind(**options)
    except TypeError as exc:
        raise ConfigError(f"data source 'folder' (streamed): {exc}; it takes {inspect.signature(LazyImageFolder)}") \
            from None
    return LazyImageFolder(**options)


def items_to_raw(items: list[tuple[dict, dict]], kinds: dict[str, str], info: dict | None = None) -> RawData:
    """Dataset items -> one RawData, each column stacked as its kind's class says (`stack_values`:
    images and vectors stacked, captions listed, labels as int64)."""
    mods, mask = {}, {}
    for name, kind in kinds.items():
        mods[name] = kind_class(kind).stack_values([values[name] for values, _ in items])
        mask[name] = np.array([present[name] for _, present in items], dtype=bool)
    return RawData(mods, dict(kinds), mask, info=dict(info or {}))


class BatchCollate:
    """collate_fn for LazyImageFolder: items -> a Batch (data + mask), prepared by the model's
    modalities exactly as `TensorData.from_raw` prepares in-memory data."""

    def __init__(self, model, kinds: dict[str, str], info: dict | None = None):
        self.model, self.kinds, self.info = model, kinds, info

    def __call__(self, items: list[tuple[dict, dict]]) -> Batch:
        with torch.no_grad():
            return TensorData.from_raw(self.model, items_to_raw(items, self.kinds, self.info)).batch()


def lazy_loader(data: LazyImageFolder, model, batch_size: int, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, num_workers: int = 0) -> DataLoader:
    """A DataLoader of Batches over `data`; num_workers > 0 decodes images in worker processes."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen,
                      collate_fn=data.collate(model), num_workers=num_workers,
                      persistent_workers=num_workers > 0)
