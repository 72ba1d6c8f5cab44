"""The user's own paired data in the Hugging Face ImageFolder layout: images plus a
`metadata.jsonl` or `metadata.csv` next to them, with a `file_name` column and one
column per other modality (captions, labels, numbers, lists of numbers).

`load_folder` reads everything into memory. `plan_folder` does the same work without
decoding pixels (metadata, column kinds, image headers, missing files); the streaming
dataset in `omnivae.data.lazy` reuses it.
"""
from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from omnivae.data.raw import ROLES, RawData, claiming_kinds, column_use, kind_class, known_kinds, label_kind
from omnivae.errors import InputError

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
FILE_MODALITY = "image"  # the modality name the file-name column gets
MAX_CLASSES = 50  # more distinct values than this (or half the rows or more) -> not categorical
MAX_FILE_WARNINGS = 10  # one warning per bad image file, up to this many; the summary counts all
RESIZE_FILTER = Image.Resampling.BICUBIC


class DataWarning(UserWarning):
    """Part of the user's data was skipped or marked missing."""


# -- metadata ------------------------------------------------------------------------------
@dataclass
class Table:
    """Metadata rows as read: typed values (CSV cells parsed), and each row's line number."""

    file: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int]
    cells: list[dict[str, str]] | None = None  # CSV only: the cell text, for text/label columns

    def where(self, i: int) -> str:
        return f"{self.file.name} line {self.lines[i]}"


def find_metadata(root: Path) -> Path:
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist or is not a folder")
    found = [root / n for n in METADATA_NAMES if (root / n).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{root} holds both {METADATA_NAMES[0]} and {METADATA_NAMES[1]}; keep one")
    hint = ""
    nested = sorted(str(p.relative_to(root)) for n in METADATA_NAMES for p in root.glob(f"*/{n}"))
    if nested:
        hint = f" Found {nested}: pass that sub-folder as the path."
    elif any(root.glob("*.npy")):
        hint = " It holds .npy files: use the 'arrays' source (omnivae.data.arrays.load_arrays)."
    raise InputError(f"no metadata file in {root}: expected one of {list(METADATA_NAMES)} next to the "
                     f"images, with a 'file_name' column and one column per other modality.{hint}")


def read_metadata(file: Path) -> Table:
    try:
        with open(file, encoding="utf-8-sig", newline="") as f:
            return _read_csv(file, f) if file.suffix == ".csv" else _read_jsonl(file, f)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {file}: {exc}") from None


def _read_jsonl(file: Path, f) -> Table:
    rows, lines, columns = [], [], {}
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{file.name} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{file.name} line {number}: expected a JSON object, got {type(row).__name__}")
        columns.update(dict.fromkeys(row))
        rows.append(row)
        lines.append(number)
    return Table(file, list(columns), rows, lines)


def _read_csv(file: Path, f) -> Table:
    reader = csv.DictReader(f)
    if not reader.fieldnames:
        raise InputError(f"{file.name} is empty: expected a header row with a 'file_name' column")
    dupes = sorted(c for c, k in Counter(reader.fieldnames).items() if k > 1)
    if dupes:
        raise InputError(f"{file.name}: the header repeats column(s) {dupes}")
    rows, lines, cells = [], [], []
    for cell in reader:
        if None in cell:
            raise InputError(f"{file.name} line {reader.line_num}: more cells than header columns")
        cell = {k: ("" if v is None else v) for k, v in cell.items()}
        cells.append(cell)
        rows.append({k: parse_cell(v) for k, v in cell.items()})
        lines.append(reader.line_num)
    return Table(file, list(reader.fieldnames), rows, lines, cells)


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def parse_cell(text: str) -> Any:
    """A CSV cell as int, float, list (a JSON array such as "[0.5, 1]"), str, or None if empty."""
    t = text.strip()
    if not t:
        return None
    if _INT.fullmatch(t):
        return int(t)
    if _FLOAT.fullmatch(t):
        return float(t)
    if t[0] == "[" and t[-1] == "]":
        try:
            value = json.loads(t)
        except json.JSONDecodeError:
            return text
        return value if isinstance(value, list) else text
    return text


def is_missing(value: Any) -> bool:
    """None, NaN, a blank string or an empty list: the cell holds no data."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list) and not value


# -- column kinds and values ---------------------------------------------------------------
def _type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    for t, name in ((int, "int"), (float, "float"), (str, "str"), (list, "list")):
        if isinstance(v, t):
            return name
    return type(v).__name__


def few_distinct(values: list) -> bool:
    """Whether values repeat like class labels: at most MAX_CLASSES distinct, fewer than half the count."""
    distinct = len(set(values))
    return distinct <= MAX_CLASSES and distinct < len(values) / 2


def infer_kind(table: Table, name: str) -> str | None:
    """The kind of a column from its present values (None if all are missing): the first
    registered kind that claims them as its files (`claims_files`), else the first that claims
    the values themselves (`claims_values`)."""
    present = [r.get(name) for r in table.rows if not is_missing(r.get(name))]
    if not present:
        return None
    types = {_type(v) for v in present}
    if types == {"str"}:
        claimed = file_kind(present)
        if claimed is not None:
            return claimed
    kind = next((k for k in claiming_kinds() if kind_class(k).claims_values(present)), None)
    if kind is None:
        first = {t: next(i for i, r in enumerate(table.rows) if _type(r.get(name)) == t) for t in sorted(types)}
        examples = ", ".join(f"{t} ({table.where(i)})" for t, i in first.items())
        raise InputError(f"column {name!r} of {table.file.name}: cannot infer its kind, it mixes "
                         f"value types {examples}. Say what it holds with --set data.options.kinds.{name}=text "
                         f"(or {', '.join(known_kinds())}, ignore; in Python: kinds={{{name!r}: 'text'}})")
    if types in ({"int"}, {"str"}) and len(present) >= 10 and len(set(present)) == len(present) \
            and not any(" " in str(v) for v in present):
        warnings.warn(f"column {name!r} of {table.file.name}: every value is distinct, so it is read as "
                      f"{kind}; if it is an identifier, skip it with --set data.options.kinds.{name}=ignore "
                      f"(in Python: kinds={{{name!r}: 'ignore'}})", DataWarning, stacklevel=4)
    return kind


def scanned_kind() -> str:
    """The first registered kind whose files the folder reader scans itself (`column_names_files`)."""
    return next(k for k in known_kinds() if kind_class(k).column_names_files)


def file_kind(names: list[str]) -> str | None:
    """The first registered kind whose class claims these file names as its own files (`claims_files`,
    e.g. audio: every name ends in .wav), or None."""
    for kind in claiming_kinds():
        if kind_class(kind).claims_files([n.strip() for n in names]):
            return kind
    return None


def _cell_text(table: Table, i: int, name: str) -> str:
    v = table.rows[i].get(name)
    if table.cells is not None:
        return table.cells[i][name].strip()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v.strip() if isinstance(v, str) else str(v)


def text_column(table: Table, name: str) -> list[str | None]:
    return [None if is_missing(r.get(name)) else _cell_text(table, i, name) for i, r in enumerate(table.rows)]


def categorical_column(table: Table, name: str, declared: list | None) -> tuple[np.ndarray, list[str]]:
    """Class indices int64 [N] (-1 where missing) and the class names."""
    labels = [str(r[name]) if _type(r.get(name)) == "int" else label  # CSV "007" is class "7"
              for r, label in zip(table.rows, text_column(table, name))]
    present = [r.get(name) for r in table.rows if not is_missing(r.get(name))]
    if declared is not None:
        classes = [str(c) for c in declared]
        if len(set(classes)) != len(classes):
            raise InputError(f"classes of column {name!r} repeat a name: {classes}")
    elif present and all(_type(v) == "int" for v in present):
        values = sorted(set(present))
        classes = [str(v) for v in (range(values[-1] + 1) if values[0] >= 0 and values[-1] < MAX_CLASSES else values)]
    else:
        classes = sorted({v for v in labels if v is not None})
    index = {c: k for k, c in enumerate(classes)}
    out = np.full(len(labels), -1, dtype=np.int64)
    for i, label in enumerate(labels):
        if label is None:
            continue
        if label not in index:
            raise InputError(f"{table.where(i)}: label {label!r} of column {name!r} is not one of the "
                             f"declared classes {classes}")
        out[i] = index[label]
    return out, classes


def vector_column(table: Table, name: str) -> np.ndarray:
    """float32 [N, D]; a row with a missing or non-finite entry is all NaN (missing)."""
    rows, dim = [], None
    for i, r in enumerate(table.rows):
        v = r.get(name)
        if is_missing(v):
            rows.append(None)
            continue
        items = v if isinstance(v, list) else [v]
        try:
            if any(isinstance(x, (bool, str)) or x is None for x in items) and not isinstance(v, str):
                raise ValueError
            row = np.asarray([float(x) for x in items], dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{table.where(i)}: column {name!r} holds {v!r}, not a number or a list of "
                             "numbers (pass kinds= to read it differently)") from None
        dim = len(row) if dim is None else dim
        if len(row) != dim:
            raise InputError(f"{table.where(i)}: column {name!r} holds {len(row)} numbers, earlier rows hold {dim}")
        rows.append(row if np.isfinite(row).all() else None)
    out = np.full((len(rows), dim or 1), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return out


# -- images ----------------------------------------------------------------------------------
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


def normal_mode(mode: str) -> str:
    """The mode an image is converted to when no `mode` is given: L for grey, else RGB."""
    return "L" if mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16") else "RGB"


def read_header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and PIL mode of an image file, without decoding pixels; OSError if unreadable."""
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None


def read_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """uint8 [C,H,W] in `mode`, resized to `size` (width, height); OSError if unreadable."""
    try:
        with Image.open(path) as im, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency notices from convert
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                scale = 255.0 / (65535.0 if im.mode != "F" else max(1.0, float(np.max(im))))
                im = Image.fromarray((np.asarray(im, dtype=np.float32) * scale).clip(0, 255).astype(np.uint8))
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, RESIZE_FILTER)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


@dataclass
class ImageColumn:
    """One image modality: a path per row (None if the row names no file), header results."""

    name: str
    column: str
    paths: list[Path | None]
    ok: np.ndarray  # bool [N]: the file exists and its header reads
    size: tuple[int, int] = (0, 0)  # width, height every image is converted to
    mode: str = "RGB"
    problems: dict[str, int] = field(default_factory=Counter)  # reason -> count

    @property
    def shape(self) -> tuple[int, int, int]:
        return CHANNELS[self.mode], self.size[1], self.size[0]


def scan_images(table: Table, root: Path, name: str, column: str, image_size: int | None, resize: str,
                mode: str | None, warn) -> ImageColumn:
    """Check each named file exists and its header reads; choose the common size and mode."""
    paths = [None if is_missing(r.get(column)) else root / str(r[column]).strip() for r in table.rows]
    col = ImageColumn(name, column, paths, np.zeros(len(paths), dtype=bool))
    sizes, modes = [], []
    for i, p in enumerate(paths):
        if p is None:
            continue
        if not p.is_file():
            warn(col, i, f"image file {p.name!r} ({table.where(i)}) does not exist", "file not found")
            continue
        try:
            size, m = read_header(p)
        except OSError as exc:
            warn(col, i, f"image file {p.name!r} ({table.where(i)}) is unreadable ({exc})", "unreadable")
            continue
        col.ok[i] = True
        sizes.append((i, size))
        modes.append(normal_mode(m))
    if not sizes:
        return col
    col.size = (image_size, image_size) if image_size else Counter(s for _, s in sizes).most_common(1)[0][0]
    col.mode = mode or modes[0]
    if resize == "error":
        for i, s in sizes:
            if s != col.size:
                w, h = col.size
                raise InputError(f"image file {paths[i].name!r} ({table.where(i)}) is {s[0]}x{s[1]} "
                                 f"(width x height), expected {w}x{h}; pass resize='resize' to resize "
                                 "images to a common size" + ("" if image_size else " or choose image_size"))
    if mode is None and len(set(modes)) > 1:
        warnings.warn(f"{name!r}: images have modes {sorted(set(modes))}; converting all to {col.mode} "
                      f"(the first image's); pass mode='RGB' to keep colour", DataWarning, stacklevel=4)
    return col


# -- the plan: everything but pixels -----------------------------------------------------------
@dataclass
class FolderPlan:
    root: Path
    table: Table
    images: dict[str, ImageColumn]
    modalities: dict[str, Any]  # the other modalities' values, all rows
    kinds: dict[str, str]
    mask: dict[str, np.ndarray]  # every modality, images included
    targets: dict[str, np.ndarray]
    classes: dict[str, list[str]]
    warned: int = 0

    def warn_file(self, col: ImageColumn, i: int, message: str, reason: str) -> None:
        col.ok[i] = False
        self.mask[col.name][i] = False
        col.problems[reason] += 1
        self.warned += 1
        if self.warned <= MAX_FILE_WARNINGS:
            warnings.warn(f"{message}; image marked missing for that row", DataWarning, stacklevel=3)
        elif self.warned == MAX_FILE_WARNINGS + 1:
            warnings.warn("more image files are missing or unreadable; see the summary", DataWarning, stacklevel=3)

    def info(self) -> dict[str, Any]:
        return {"source": "folder", "path": str(self.root), "metadata": self.table.file.name,
                "classes": dict(self.classes)}

    def finish(self) -> np.ndarray:
        """Refuse data that lost most images; warn a summary; return the rows to keep."""
        n = len(self.table.rows)
        for col in self.images.values():
            named = sum(p is not None for p in col.paths)
            lost = named - int(col.ok.sum())
            if not named:
                raise InputError(f"{self.table.file}: column {col.column!r} names no image file in any row")
            if lost > named / 2:
                raise InputError(
                    f"{self.table.file}: {lost} of {named} image files named in column {col.column!r} are "
                    f"missing or unreadable ({dict(col.problems)}); refusing to drop most of the data. "
                    "Check that file names are relative to the metadata file's folder.")
        keep = np.zeros(n, dtype=bool)
        for m in self.mask.values():
            keep |= m
        skipped = n - int(keep.sum())
        partial = int((~np.stack(list(self.mask.values()))[:, keep]).any(0).sum())
        if skipped or partial:
            parts = []
            for name, m in self.mask.items():
                missing = int((~m[keep]).sum())
                if missing:
                    why = self.images[name].problems if name in self.images else {}
                    detail = f" ({', '.join(f'{k} {v}' for k, v in why.items())})" if why else ""
                    parts.append(f"{name} {missing}{detail}")
            warnings.warn(f"{self.table.file}: read {n} rows; {skipped} skipped (nothing present); "
                          f"{partial} kept with some modality missing; missing per modality: "
                          + (", ".join(parts) or "none"), DataWarning, stacklevel=3)
        if not keep.any():
            raise InputError(f"{self.table.file}: no row holds any data")
        return keep


def _check_options(resize, mode, image_size, kinds, classes) -> None:
    if resize not in ("resize", "error"):
        raise InputError(f"resize must be 'resize' or 'error', got {resize!r}")
    if mode not in (None, *CHANNELS):
        raise InputError(f"mode must be one of {list(CHANNELS)} or None, got {mode!r}")
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise InputError(f"image_size must be a positive integer or None, got {image_size!r}")
    for arg, value in (("kinds", kinds), ("classes", classes)):
        if value is not None and not isinstance(value, dict):
            raise InputError(f"{arg} must map column names to values, got {type(value).__name__}")
    allowed = column_kinds()
    bad = {c: k for c, k in (kinds or {}).items() if k not in allowed}
    if bad:
        raise InputError(f"kinds {bad}: each kind must be one of {list(allowed)}")


def readable(cls) -> bool:
    """Whether a kind's class can read a metadata column: it names files, or reads cells itself."""
    from omnivae.modalities import Modality

    return cls.column_names_files or cls.read_column.__func__ is not Modality.read_column.__func__


def column_kinds() -> tuple[str, ...]:
    """What a metadata column may be: a kind whose class reads columns or names files, or a role."""
    return (*(k for k in known_kinds() if readable(kind_class(k))), *ROLES)


def plan_folder(path, image_size: int | None = None, resize: str = "resize", kinds: dict | None = None,
                image_column: str = "file_name", classes: dict | None = None,
                mode: str | None = None) -> FolderPlan:
    """Read metadata, type every column and check every image header, without decoding pixels."""
    _check_options(resize, mode, image_size, kinds, classes)
    root = Path(path)
    table = read_metadata(find_metadata(root))
    if not table.rows:
        raise InputError(f"{table.file} holds no rows")
    kinds, classes = dict(kinds or {}), dict(classes or {})
    if image_column not in table.columns:
        raise InputError(f"{table.file.name} has no {image_column!r} column (the image file names); "
                         f"its columns are {table.columns}. Name it with --set data.options.image_column=COLUMN "
                         "(in Python: image_column=)")
    unknown = sorted((set(kinds) | set(classes)) - set(table.columns))
    if unknown:
        raise InputError(f"kinds/classes name column(s) {unknown} that {table.file.name} lacks; "
                         f"its columns are {table.columns}")
    named = [str(r[image_column]) for r in table.rows if not is_missing(r.get(image_column))]
    # the file-name column's kind: kinds= if given, else the kind that claims the names, else the
    # first registered kind the folder scans files for (images)
    kind = kinds.setdefault(image_column, (file_kind(named) if named else None) or scanned_kind())
    if not column_use(kind).modality or not readable(kind_class(kind)):
        raise InputError(f"column {image_column!r} holds the image file names; it cannot be {kind!r}")
    # a file kind the folder scans (images) makes modality FILE_MODALITY; one read like a column (audio) its kind name
    file_modality = FILE_MODALITY if kind_class(kind).column_names_files else kind
    plan = FolderPlan(root, table, {}, {}, {}, {}, {}, {})
    for column in table.columns:
        kind = kinds.get(column) or (label_kind() if column in classes else infer_kind(table, column))
        if kind is None:
            warnings.warn(f"column {column!r} of {table.file.name} is empty in every row; ignored",
                          DataWarning, stacklevel=2)
            continue
        use = column_use(kind)
        if use.reads is None:
            continue
        name = file_modality if column == image_column else column
        if name in plan.kinds or (name == file_modality and column != image_column):
            raise InputError(f"column {column!r} clashes with the file modality's name {file_modality!r}; pass "
                             f"--set data.options.kinds.{column}=ignore (in Python: kinds={{{column!r}: 'ignore'}}) or rename it")
        reader = kind_class(use.reads)  # a "target" column is read as the label kind reads it
        if reader.column_names_files:
            plan.kinds[name], plan.mask[name] = kind, np.zeros(len(table.rows), dtype=bool)
            plan.images[name] = scan_images(table, root, name, column, image_size, resize, mode, plan.warn_file)
            continue
        values, present, names = reader.read_column(table, column, classes.get(column))
        if names is not None:
            plan.classes[name] = names
        if not use.modality:  # a target column: evaluation labels only
            plan.targets[name] = values.copy()
            continue
        labels = reader.label_targets(values)
        if labels is not None:
            plan.targets[name] = labels
        plan.modalities[name], plan.kinds[name], plan.mask[name] = values, use.reads, present
    for name, col in plan.images.items():
        plan.mask[name] = col.ok.copy()
    return plan


def load_folder(path, image_size: int | None = None, resize: str = "resize", kinds: dict[str, str] | None = None,
                image_column: str = "file_name", classes: dict[str, list] | None = None,
                mode: str | None = None) -> RawData:
    """Images (uint8 [N,C,H,W], modality "image") and every metadata column as its own modality.

    kinds: column -> text | categorical | vector | image | target (labels for evaluation only) |
    ignore, overriding inference. classes: column -> class names (labels outside are an error).
    Missing files, unreadable images and empty cells mark that modality missing for the row.
    The file names are kept as ids (`raw.ids[image_column]`, "" where a row names none), and
    `raw.ids["index"]` is each example's row in the metadata (rows with no data are skipped).
    """
    plan = plan_folder(path, image_size, resize, kinds, image_column, classes, mode)
    n, images = len(plan.table.rows), {}
    for name, col in plan.images.items():
        arr = np.zeros((n, *col.shape), dtype=np.uint8)
        for i in np.flatnonzero(col.ok):
            try:
                arr[i] = read_image(col.paths[i], col.mode, col.size)
            except OSError as exc:
                plan.warn_file(col, i, f"image file {col.paths[i].name!r} ({plan.table.where(i)}) is "
                                       f"unreadable ({exc})", "unreadable")
        images[name] = arr
    keep = plan.finish()
    mods = {name: images.get(name, plan.modalities.get(name)) for name in plan.kinds}
    files = np.array(["" if is_missing(r.get(image_column)) else str(r[image_column]).strip()
                      for r in plan.table.rows], dtype=str)
    raw = RawData(mods, dict(plan.kinds), dict(plan.mask), dict(plan.targets), plan.info(), {image_column: files})
    return raw if keep.all() else raw.subset(np.flatnonzero(keep))
