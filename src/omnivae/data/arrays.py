"""The user's own paired data as arrays: an `.npz` (one array per modality), a folder of
`.npy` files (optionally memory-mapped), or a Parquet table. Kinds come from a schema
(argument or `schema.json` next to the data) or are inferred from dtype and shape; each
kind's Modality class reads its arrays (`read_array`).

omnivae's own .npz layout (written by `save_npz`, e.g. by `omnivae impute`) adds, beside one
array per modality (text as unicode, "" where missing): `mask__<name>` (bool, False = missing),
`target__<name>` (int64 labels), `imputed__<name>` (bool: entries impute filled),
`ids__<name>` (per-example ids, see RawData.ids), `__kinds__` (JSON {name: kind}) and
`__classes__` (JSON {name: [class names]}). `load_arrays` reads that layout exactly: kinds,
masks, targets, ids and class names as written.

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

from omnivae.atomic import replacing
from omnivae.data.folder import CHANNELS, DataWarning, normal_mode, read_header, read_image
from omnivae.data.raw import RawData, claiming_kinds, column_use, column_uses, kind_class, known_kinds
from omnivae.errors import InputError

LAYOUT_PREFIXES = ("mask__", "target__", "imputed__", "ids__")  # omnivae's .npz layout (see the module docstring)
LAYOUT_KEYS = ("__kinds__", "__classes__")


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
        if not isinstance(entry, dict) or entry.get("kind") not in column_uses():
            raise InputError(f"schema entry {name!r}: expected a kind in {list(column_uses())} or "
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
        kind = next((k for k in claiming_kinds() if kind_class(k).claims_arrow(col.type)), None)
        if kind is None:
            raise InputError(f"{path} column {name!r} has Arrow type {col.type}, which omnivae cannot read "
                             "(expected strings, integers, floats, lists of numbers or image bytes)")
        values[name], names, present = kind_class(kind).read_arrow(name, col)
        kinds[name] = kind
        if names is not None:
            classes[name] = names
        if present is not None:
            masks[name] = present
    return values, kinds, classes, masks


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
    """The first registered kind whose class claims an array of this dtype and shape."""
    kinds = known_kinds()
    found = next((k for k in claiming_kinds() if kind_class(k).claims_array(arr)), None)
    if found is None:
        raise InputError(f"array {name!r} of shape {list(arr.shape)} and dtype {arr.dtype} has no obvious kind; "
                         f"give it one with --set data.options.schema.{name}=vector (in Python: schema={{{name!r}: "
                         f"'vector'}}; kinds: {list(kinds)})")
    return found


def convert(name: str, arr: Any, kind: str, classes: list | None, present: np.ndarray | None = None
            ) -> tuple[Any, np.ndarray, list[str] | None]:
    """(values in RawData form, presence mask, class names or None) for one array, read by its
    kind's class; `present` is a known mask of decoded images."""
    if isinstance(arr, np.ndarray) and arr.ndim == 0:
        raise InputError(f"array {name!r} holds a single value (shape []); expected one entry per example")
    return kind_class(kind).read_array(name, arr, classes, present)


def load_arrays(path, schema: dict[str, Any] | None = None, mmap: bool = False) -> RawData:
    """Paired data from an .npz, a folder of .npy files (mmap=True maps them, not reading them
    up front) or a .parquet table; one array or column per modality.

    schema: name -> kind (or {"kind": ..., "classes": [...]}), merged over a schema.json next
    to the data; kind "target" keeps an array as evaluation labels only, "ignore" skips it.
    Missing entries: NaN rows (vectors, signals, float images), -1 labels, None/"" captions.
    An .npz in omnivae's own layout (see the module docstring) is read as written.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path {path} does not exist")
    spec = read_schema(path, schema)
    inferred, classes, decoded, layout = {}, {}, {}, None
    if path.suffix == ".npz":
        (arrays, layout), fmt = split_layout(read_npz(path), path), "npz"
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
    written = layout or {"kinds": {}, "classes": {}, "mask": {}, "targets": {}, "imputed": {}, "ids": {}}
    mods, kinds, mask, targets, names = {}, {}, {}, {}, {}
    for name, arr in arrays.items():
        if fmt != "parquet" and isinstance(arr, np.ndarray) and np.issubdtype(arr.dtype, np.bytes_):
            raise InputError(f"array {name!r} holds bytes strings (dtype {arr.dtype}); save unicode "
                             "strings instead: arr.astype(str)")
        entry = spec.get(name, {})
        use = column_use(entry.get("kind") or written["kinds"].get(name) or inferred.get(name)
                         or infer_array_kind(name, arr))
        if use.reads is None:
            continue
        declared = entry.get("classes") or classes.get(name) or written["classes"].get(name)
        values, present, cls = convert(name, arr, use.reads, declared, decoded.get(name))
        if name in written["mask"]:
            if len(written["mask"][name]) != len(present):
                raise InputError(f"{path}: mask__{name} has {len(written['mask'][name])} entries, but {name!r} "
                                 f"has {len(present)}")
            present = present & written["mask"][name]
        if cls:
            names[name] = cls
        if not use.modality:  # a target column: evaluation labels only
            targets[name] = values.copy()
            continue
        # labels of a label kind double as targets, unless the file lists its targets itself
        labels = kind_class(use.reads).label_targets(values) if layout is None else None
        if labels is not None:
            targets[name] = labels
        mods[name], kinds[name], mask[name] = values, use.reads, present
    if not mods:
        raise InputError(f"{path} holds no modality (every array is ignored or a target)")
    targets.update(written["targets"])
    names.update({t: c for t, c in written["classes"].items() if t in written["targets"] and t not in names})
    info = {"source": "arrays", "path": str(path), "format": fmt, "classes": names}
    imputed = {n: f for n, f in written["imputed"].items() if n in mods}
    if imputed:
        info["imputed"] = imputed
    return RawData(mods, kinds, mask, targets, info, dict(written["ids"]))


# -- omnivae's own .npz layout ---------------------------------------------------------------
def integer_like(dtype) -> bool:
    """bool or any integer dtype (flags and class labels)."""
    return dtype == np.bool_ or np.issubdtype(dtype, np.integer)


def split_layout(arrays: dict[str, np.ndarray], path: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """(the modality arrays, what the layout's special arrays say: kinds, classes, mask, targets,
    imputed, ids), or (arrays, None) for an .npz that holds none of them."""
    special = [k for k in arrays if k in LAYOUT_KEYS or k.startswith(LAYOUT_PREFIXES)]
    if not special:
        return arrays, None
    layout = {"kinds": _json_member(arrays, "__kinds__", path), "classes": _json_member(arrays, "__classes__", path)}
    plain = {k: v for k, v in arrays.items() if k not in special}
    for prefix in LAYOUT_PREFIXES:
        layout[prefix[:-2]] = {k[len(prefix):]: arrays[k] for k in special if k.startswith(prefix)}
    for what in ("mask", "imputed"):
        for name, flags in layout[what].items():
            if name not in plain:
                raise InputError(f"{path}: {what}__{name} marks rows of {name!r}, but the file holds no array "
                                 f"{name!r} (it holds {sorted(plain)})")
            if flags.ndim != 1 or not integer_like(flags.dtype):
                raise InputError(f"{path}: {what}__{name} must be a 1-D bool array, got shape "
                                 f"{list(flags.shape)} dtype {flags.dtype}")
            layout[what][name] = flags.astype(bool)
    layout["targets"] = {}
    for name, labels in layout.pop("target").items():
        if labels.ndim != 1 or not integer_like(labels.dtype):
            raise InputError(f"{path}: target__{name} must be 1-D integer labels, got shape {list(labels.shape)} "
                             f"dtype {labels.dtype}")
        layout["targets"][name] = labels.astype(np.int64)
    for name, names in layout["classes"].items():
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise InputError(f"{path}: __classes__ must map names to lists of class names, got {name!r}: {names!r}")
    for name, kind in layout["kinds"].items():
        if not isinstance(kind, str) or kind not in column_uses():
            raise InputError(f"{path}: __kinds__ gives {name!r} the kind {kind!r}, which is not one of "
                             f"{list(column_uses())}")
    return plain, layout


def _json_member(arrays: dict[str, np.ndarray], key: str, path: Path) -> dict:
    if key not in arrays:
        return {}
    try:
        value = json.loads(str(arrays[key]))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: {key} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: {key} must hold a JSON object {{name: ...}}, got {type(value).__name__}")
    return value


def save_npz(raw: RawData, path) -> Path:
    """Write RawData in omnivae's .npz layout (read back exactly by `load_arrays`): each kind's
    values as one plain array (its class's `raw_array`), masks, targets, imputed flags, ids,
    kinds and class names. Atomic: a failed or killed write leaves an existing file as it was."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise InputError(f"{path}: expected a file name ending in .npz")
    arrays: dict[str, np.ndarray] = {}
    for name, values in raw.modalities.items():
        arrays[name] = kind_class(raw.kinds[name]).raw_array(values)
        arrays[f"mask__{name}"] = np.asarray(raw.mask[name], dtype=bool)
    for name, values in raw.targets.items():
        arrays[f"target__{name}"] = np.asarray(values)
    for name, flags in (raw.info.get("imputed") or {}).items():
        arrays[f"imputed__{name}"] = np.asarray(flags, dtype=bool)
    for name, values in raw.ids.items():
        arrays[f"ids__{name}"] = np.asarray(values)
    arrays["__kinds__"] = np.array(json.dumps({n: raw.kinds[n] for n in raw.modalities}))
    classes = {n: [str(c) for c in v] for n, v in (raw.info.get("classes") or {}).items()
               if (n in raw.modalities or n in raw.targets) and isinstance(v, (list, tuple)) and v}
    if classes:
        arrays["__classes__"] = np.array(json.dumps(classes))
    # a temporary file beside the target, renamed over it once complete (this matters most when
    # the file written is the input itself); np.savez gets a handle: given a name it adds ".npz"
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path
