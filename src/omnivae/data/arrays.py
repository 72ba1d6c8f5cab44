"""The user's own paired data as arrays: an `.npz` (one array per modality), a folder of
`.npy` files (optionally memory-mapped), or a Parquet table. Kinds come from a schema
(argument or `schema.json` next to the data) or are inferred from dtype and shape.

Files are never unpickled: `.npy`/`.npz` load with allow_pickle=False, because unpickling
can run arbitrary code; object arrays are refused with an error saying how to convert them.
"""
from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from omnivae.data.folder import CHANNELS, DataWarning, normal_mode, read_header, read_image
from omnivae.data.raw import KINDS, RawData
from omnivae.errors import InputError

SPECIAL_KINDS = ("target", "ignore")  # target: evaluation labels only; ignore: not loaded
CHUNK_BYTES = 64 << 20  # missing-row scans of memory-mapped arrays read this much at a time


def read_schema(path: Path, schema: dict | None) -> dict[str, dict]:
    """name -> {"kind": ..., "classes": [...] optional}; `schema` entries override schema.json."""
    found = {}
    candidates = [path / "schema.json"] if path.is_dir() else [path.with_suffix(".schema.json"),
                                                                path.with_name("schema.json")]
    for file in candidates:
        if file.is_file():
            try:
                found = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"cannot read {file}: {exc}") from None
            if not isinstance(found, dict):
                raise InputError(f"{file} must hold a JSON object {{name: kind}}, got {type(found).__name__}")
            break
    out = {}
    for name, entry in {**found, **(schema or {})}.items():
        entry = {"kind": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or entry.get("kind") not in (*KINDS, *SPECIAL_KINDS):
            raise InputError(f"schema entry {name!r}: expected a kind in {[*KINDS, *SPECIAL_KINDS]} or "
                             f"{{'kind': ..., 'classes': [...]}}, got {entry!r}")
        out[name] = entry
    return out


# -- reading files -------------------------------------------------------------------------
_PICKLE_HINT = ("object arrays are refused because loading them would unpickle, which can run code; "
                "save strings as a unicode array (np.array(list_of_str, dtype=str)) and numbers as a "
                "numeric dtype")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: _load_member(f, name, path) for name in f.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def _load_member(f, name: str, path: Path) -> np.ndarray:
    try:
        return f[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputError(f"{path} array {name!r}: {_PICKLE_HINT}") from None
        raise


def read_npy_folder(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path} holds no .npy files (expected one file per modality, e.g. image.npy)")
    out = {}
    for file in files:
        try:
            out[file.stem] = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc) or "Python objects" in str(exc):
                raise InputError(f"{file}: {_PICKLE_HINT}") from None
            raise InputError(f"cannot read {file}: {exc}") from None
        except OSError as exc:
            raise InputError(f"cannot read {file}: {exc}") from None
    return out


def read_parquet(path: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, list[str]], dict]:
    """Columns as arrays, with the kind each column's Arrow type implies, any class names, and
    which rows of image columns decoded."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'omnivae[tables]'") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    values, kinds, classes, masks = {}, {}, {}, {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        t = col.type
        if pa.types.is_dictionary(t):
            classes[name] = [str(c) for c in col.dictionary.to_pylist()]
            values[name] = col.indices.fill_null(-1).to_numpy().astype(np.int64)
            kinds[name] = "categorical"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            values[name], kinds[name] = col.to_pylist(), "text"
        elif pa.types.is_integer(t) or pa.types.is_boolean(t):
            values[name] = col.cast(pa.int64()).to_numpy(zero_copy_only=False)  # float with NaN if nulls
            kinds[name] = "categorical"
        elif pa.types.is_floating(t):
            values[name], kinds[name] = col.cast(pa.float32()).fill_null(np.nan).to_numpy(), "vector"
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            values[name], kinds[name] = _list_column(name, col, pa), "vector"
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
                pa.types.is_struct(t) and t.get_field_index("bytes") >= 0):
            cells = col.field("bytes") if pa.types.is_struct(t) else col
            values[name], masks[name] = decode_images(name, cells.to_pylist())
            kinds[name] = "image"
        else:
            raise InputError(f"{path} column {name!r} has Arrow type {t}, which omnivae cannot read "
                             "(expected strings, integers, floats, lists of numbers or image bytes)")
    return values, kinds, classes, masks


def _list_column(name: str, col, pa) -> np.ndarray:
    """List cells of equal length -> float32 [N, D] (rows of nulls -> NaN, i.e. missing)."""
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


def decode_images(name: str, cells: list) -> tuple[np.ndarray, np.ndarray]:
    """Encoded images (PNG/JPEG bytes, None if missing) -> uint8 [N,C,H,W] at the most common
    size, and which rows decoded."""
    headers = {}
    for i, b in enumerate(cells):
        if b is not None:
            try:
                headers[i] = read_header(io.BytesIO(b))
            except OSError as exc:
                warnings.warn(f"column {name!r} row {i}: unreadable image ({exc}); marked missing", DataWarning,
                              stacklevel=2)
    if not headers:
        raise InputError(f"column {name!r} holds no readable image")
    size = Counter(s for s, _ in headers.values()).most_common(1)[0][0]
    mode = normal_mode(next(iter(headers.values()))[1])
    out = np.zeros((len(cells), CHANNELS[mode], size[1], size[0]), dtype=np.uint8)
    present = np.zeros(len(cells), dtype=bool)
    for i in headers:
        try:
            out[i], present[i] = read_image(io.BytesIO(cells[i]), mode, size), True
        except OSError as exc:
            warnings.warn(f"column {name!r} row {i}: unreadable image ({exc}); marked missing", DataWarning,
                          stacklevel=2)
    return out, present


# -- kinds and values ----------------------------------------------------------------------
def infer_array_kind(name: str, arr: np.ndarray) -> str:
    d, nd = arr.dtype, arr.ndim
    if d.kind == "U":
        return "text"
    if nd == 4 and (d == np.uint8 or d.kind == "f"):
        return "image"
    if nd == 3 and d == np.uint8:
        return "image"
    if nd == 3 and d.kind == "f":
        return "signal"
    if nd == 1 and d.kind in "iub":
        return "categorical"
    if nd in (1, 2) and d.kind in "fiu":
        return "vector"
    raise InputError(f"array {name!r} of shape {list(arr.shape)} and dtype {d} has no obvious kind; "
                     f"give it one with schema={{{name!r}: 'vector'}} (kinds: {list(KINDS)})")


def _rows_finite(arr: np.ndarray) -> np.ndarray:
    """bool [N]: rows with no NaN/inf, read in chunks so memory-mapped arrays stay on disk."""
    if arr.dtype.kind != "f":
        return np.ones(len(arr), dtype=bool)
    step = max(1, CHUNK_BYTES // max(1, arr[:1].nbytes))
    return np.concatenate([np.isfinite(arr[i:i + step]).reshape(min(step, len(arr) - i), -1).all(1)
                           for i in range(0, len(arr), step)]) if len(arr) else np.zeros(0, dtype=bool)


def convert(name: str, arr: Any, kind: str, classes: list | None, present: np.ndarray | None = None
            ) -> tuple[Any, np.ndarray, list[str] | None]:
    """(values in RawData form, presence mask, class names or None) for one array; `present`
    is a known mask of decoded images."""
    if kind == "text":
        if isinstance(arr, np.ndarray) and arr.dtype.kind != "U":
            raise InputError(f"text array {name!r} has dtype {arr.dtype}; expected unicode strings ('<U')")
        values = [None if v is None or not str(v).strip() else str(v) for v in list(arr)]
        return values, np.array([v is not None for v in values], dtype=bool), None
    if kind in ("categorical", "target"):
        return _categorical(name, arr, classes)
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
        raise InputError(f"{kind} array {name!r} must be numeric, got "
                         f"{arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__}")
    if kind == "image":
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim == 4 and arr.shape[1] not in CHANNELS.values() and arr.shape[3] in CHANNELS.values():
            arr = arr.transpose(0, 3, 1, 2)  # channels-last [N,H,W,C] -> [N,C,H,W] (a view)
        if arr.ndim != 4:
            raise InputError(f"image array {name!r} has shape {list(arr.shape)}; expected [N,C,H,W] or [N,H,W]")
        return arr, _rows_finite(arr) if present is None else present, None
    if kind == "vector":
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise InputError(f"vector array {name!r} has shape {list(arr.shape)}; expected [N] or [N,D]")
    elif kind == "signal":
        if arr.ndim == 2:
            arr = arr[:, None]
        if arr.ndim != 3:
            raise InputError(f"signal array {name!r} has shape {list(arr.shape)}; expected [N,L] or [N,C,L]")
    arr = arr.astype(np.float32, copy=False) if arr.dtype.kind in "fiub" and arr.dtype != np.float32 else arr
    return arr, _rows_finite(arr), None


def _categorical(name: str, arr: Any, classes: list | None):
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


def load_arrays(path, schema: dict[str, Any] | None = None, mmap: bool = False) -> RawData:
    """Paired data from an .npz, a folder of .npy files (mmap=True maps them, not reading them
    up front) or a .parquet table; one array or column per modality.

    schema: name -> kind (or {"kind": ..., "classes": [...]}), merged over a schema.json next
    to the data; kind "target" keeps an array as evaluation labels only, "ignore" skips it.
    Missing entries: NaN rows (vectors, signals, float images), -1 labels, None/"" captions.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path {path} does not exist")
    spec = read_schema(path, schema)
    inferred, classes, decoded = {}, {}, {}
    if path.suffix == ".npz":
        arrays, fmt = read_npz(path), "npz"
    elif path.suffix == ".parquet":
        arrays, inferred, classes, decoded = read_parquet(path)
        fmt = "parquet"
    elif path.is_dir() or path.suffix == ".npy":
        arrays, fmt = read_npy_folder(path, mmap), "npy"
    else:
        raise InputError(f"{path}: expected an .npz file, a .parquet file or a folder of .npy files")
    if mmap and fmt != "npy":
        warnings.warn(f"mmap applies to folders of .npy files; {path.name} is read into memory", DataWarning,
                      stacklevel=2)
    unknown = sorted(set(spec) - set(arrays))
    if unknown:
        raise InputError(f"schema names {unknown}, but {path} holds {sorted(arrays)}")
    mods, kinds, mask, targets, names = {}, {}, {}, {}, {}
    for name, arr in arrays.items():
        if fmt != "parquet" and isinstance(arr, np.ndarray) and arr.dtype.kind == "S":
            raise InputError(f"array {name!r} holds bytes strings (dtype {arr.dtype}); save unicode "
                             "strings instead: arr.astype(str)")
        kind = spec.get(name, {}).get("kind") or inferred.get(name) or infer_array_kind(name, arr)
        if kind == "ignore":
            continue
        values, present, cls = convert(name, arr, kind, spec.get(name, {}).get("classes") or classes.get(name),
                                       decoded.get(name))
        if cls:
            names[name] = cls
        if kind in ("categorical", "target"):
            targets[name] = values.copy()
            if kind == "target":
                continue
        mods[name], kinds[name], mask[name] = values, kind, present
    if not mods:
        raise InputError(f"{path} holds no modality (every array is ignored or a target)")
    info = {"source": "arrays", "path": str(path), "format": fmt, "classes": names}
    return RawData(mods, kinds, mask, targets, info)
