"""One owner for each modality kind: data sources, tasks, metrics, serving, training and the CLI
ask the kind's Modality class (omnivae.modalities) for what they need (reading, writing, scoring,
capabilities) instead of comparing kind names, so a new kind is one file plus `register_modality`."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import omnivae
from omnivae.data.arrays import load_arrays, save_npz
from omnivae.errors import InputError
from omnivae.modalities import MODALITY_KINDS, Modality, ModalitySpec, register_modality

SRC = Path(omnivae.__file__).parent
KIND_NAMES = {"image", "text", "categorical", "vector", "signal", "audio"}
# words that stand in for a kind (how a kind is shown): choosing by them is choosing by kind
STAND_INS = {"picture", "pictures", "caption", "captions", "label", "labels", "audio", "sound"}
# every module outside modalities/ (the one place that knows the kinds)
SCANNED = [p for p in sorted(SRC.rglob("*.py")) if not p.relative_to(SRC).as_posix().startswith("modalities/")]
# the benchmarks choose modalities the same way (by what their kinds draw, never by kind name)
BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def where(path: Path) -> str:
    """A scanned file as omnivae/... or benchmarks/..."""
    return str(path.relative_to(SRC.parent if path.is_relative_to(SRC) else path.parents[1]))


def _strings(node: ast.AST) -> list[str]:
    """String constants of a comparison operand, including those of a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


NAMED = {"modalities", "targets", "mask"}  # RawData dicts keyed by modality name: `"image" in raw.modalities`


def _names_a_modality(node: ast.Compare) -> bool:
    """`"x" in raw.modalities`: a test of a modality's name (a key of a by-name dict), not of a kind."""
    return all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and \
        isinstance(node.comparators[-1], ast.Attribute) and node.comparators[-1].attr in NAMED


def kind_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, names) of every comparison (==, !=, in, not in, match case) against a kind name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        operands = []
        if isinstance(node, ast.Compare) and not _names_a_modality(node):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        names = sorted({s for o in operands for s in _strings(o)} & (KIND_NAMES | STAND_INS))
        if names:
            found.append((node.lineno, ", ".join(names)))
    return found


def test_the_scanner_finds_kind_comparisons():
    code = ('if kind == "text": pass\nif kinds[m] in ("image", "vector"): pass\n'
            'x = a if "signal" != k else b\nif kind == "target": pass\nif d.kind in "fiu": pass\n'
            'if "image" not in raw.modalities: pass\nmatch kind:\n    case "vector": pass\n'
            'if m.display == "picture": pass\nshown = [n for n in names if show[n] in ("caption", "x")]\n')
    assert sorted(line for line, _ in kind_comparisons(code)) == [1, 2, 3, 8, 9, 10]


def _modality_names(tree: ast.AST) -> set[int]:
    """ids of string constants that name a modality, not a kind: dict keys and subscripts
    (`mods["image"]`), `"image" in raw.modalities`, docstrings, and constants assigned to a name
    ending in MODALITY (the folder reader's FILE_MODALITY)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            names.add(id(node.slice))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            names.add(id(node.value))
        elif isinstance(node, ast.Compare) and _names_a_modality(node):
            names.add(id(node.left))
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.endswith("MODALITY")
                                                  for t in node.targets):
            names.add(id(node.value))
    return names


def kind_values(source: str) -> list[tuple[int, str]]:
    """(line, name) of every kind name written as a value: returned, assigned, passed or put in a
    dict as a value. Readers that pick a kind this way (`return "vector"` for a column of numbers)
    decide for the kinds; the kind's class should claim its data instead (claims_values,
    claims_arrow, claims_array, claims_files) or be named by its class (`ImageModality.kind`)."""
    tree = ast.parse(source)
    names = _modality_names(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in KIND_NAMES
            and id(n) not in names]


def test_the_scanner_finds_kind_names_written_as_values():
    code = ('def f(t):\n    """Reads "text" columns."""\n    return "vector"\n'
            'kinds = {"image": "image"}\nx = mods["text"]\nif "signal" in raw.modalities: pass\n'
            'FILE_MODALITY = "image"\nKIND = "categorical"\nload(kind="text")\nk = "image" if a else "labels"\n')
    assert sorted(kind_values(code)) == [(3, "vector"), (4, "image"), (8, "categorical"), (9, "text"), (10, "image")]


def test_no_module_outside_modalities_writes_a_kind_name():
    problems = []
    for path in SCANNED:
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        problems += [f"{path.relative_to(SRC.parent)}:{line}: {name!r}: {lines[line - 1].strip()}"
                     for line, name in kind_values(source)]
    assert not problems, ("let the kinds claim their data (claims_values, claims_arrow, claims_array, "
                          "claims_files) or name a kind by its class (ImageModality.kind):\n" + "\n".join(problems))


def display_reads(source: str) -> list[int]:
    """Lines that read a `.display` attribute (the kind's old show-as word): capabilities replace it."""
    return [n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute) and n.attr == "display"]


def test_no_module_outside_modalities_reads_a_display_word():
    assert display_reads("a = mod.display\nb = mod.pictures\n") == [1]
    problems = [f"{p.relative_to(SRC.parent)}:{line}" for p in SCANNED for line in display_reads(p.read_text("utf-8"))]
    assert not problems, "use the kind's capabilities (pictures, free_text, drawable) or methods instead:\n" + \
        "\n".join(problems)


def test_no_module_outside_modalities_compares_kind_names():
    problems = []
    for path in SCANNED + BENCHMARKS:
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for line, names in kind_comparisons(source):
            problems.append(f"{where(path)}:{line}: compares with {names}: {lines[line - 1].strip()}")
    assert not problems, "ask the kind's Modality class instead:\n" + "\n".join(problems)


def kind_equalities(source: str) -> list[int]:
    """Lines of every == / != whose operand is a variable or attribute named `kind` (`kind ==
    "target"`, `spec.kind != x`): a branch on whatever names a kind, a role or any other kind of
    thing. Outside modalities/ such choices go through a lookup (column_use, PRIORS, a table of
    functions) and numpy dtypes through np.issubdtype, so a grep for `kind ==` finds only the kinds."""
    def named_kind(node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id == "kind" or isinstance(node, ast.Attribute) and node.attr == "kind"

    return sorted({n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Compare)
                   and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in n.ops)
                   and any(named_kind(o) for o in (n.left, *n.comparators))})


def test_no_module_outside_modalities_compares_a_kind_for_equality():
    code = ('if kind == "target": pass\nif a.dtype.kind != "U": pass\nif kind in ROLES: pass\n'
            'x = 1 if "gmm" == cfg.kind else 2\nif other != kinds: pass\n')
    assert kind_equalities(code) == [1, 2, 4]
    problems = [f"{where(p)}:{line}: {p.read_text('utf-8').splitlines()[line - 1].strip()}"
                for p in SCANNED + BENCHMARKS for line in kind_equalities(p.read_text("utf-8"))]
    assert not problems, ("look the kind or role up instead (column_use, MODALITY_KINDS, PRIORS; np.issubdtype "
                          "for dtypes):\n" + "\n".join(problems))


# Boolean class attributes of the kinds that other code may read: what training and reading need
# from a kind (the model contract), not how values are shown. How values are drawn, previewed,
# augmented, corrupted, summarised or turned into labels is a method of the kind instead.
DECLARED_NEEDS = {
    "stackable": "greedy layer-wise pre-training stacks the kind's encoder (models/stacked.py)",
    "adversarial": "a discriminator can judge the kind's decoded means (train/adversarial.py)",
    "continuous_features": "the plain autoencoder's code reads the kind's features (models/ae.py)",
    "column_names_files": "the folder reader scans the files a metadata column names (data/folder.py)",
}


def kind_flags() -> set[str]:
    """Names of the boolean class attributes defined on Modality or on any registered kind."""
    flags = set()
    for cls in {Modality, *MODALITY_KINDS.values()}:
        for klass in (k for k in cls.__mro__ if issubclass(k, Modality)):  # not nn.Module's own
            flags |= {k for k, v in vars(klass).items() if isinstance(v, bool) and not k.startswith("_")}
    return flags


def flag_reads(source: str, flags: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every attribute read `x.name` for a name in `flags`."""
    return [(n.lineno, n.attr) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)
            and n.attr in flags and isinstance(n.ctx, ast.Load)]


def test_no_module_outside_modalities_branches_on_how_a_kind_is_shown():
    assert flag_reads("a = m.pictures\nm.pictures = 1\nb = m.stackable\n", {"pictures"}) == [(1, "pictures")]
    flags = kind_flags()
    assert set(DECLARED_NEEDS) <= flags, "a declared need is no longer a flag of any kind"
    shown = flags - set(DECLARED_NEEDS)
    problems = [f"{p.relative_to(SRC.parent)}:{line}: reads {name}" for p in SCANNED
                for line, name in flag_reads(p.read_text("utf-8"), shown)]
    assert not problems, ("a flag of the kinds read outside modalities/: give the kind a method for the "
                          "behaviour instead (drawn, preview, augment, corrupt, output_diversity, label_targets)"
                          " or, for a need of training or reading, add it to DECLARED_NEEDS:\n" + "\n".join(problems))


def test_the_retired_show_flags_are_gone():
    """pictures / free_text / drawable / labels_are_targets became methods of the kinds."""
    for cls in {Modality, *MODALITY_KINDS.values()}:
        for name in ("pictures", "free_text", "drawable", "labels_are_targets", "display"):
            assert not hasattr(cls, name), f"{cls.__name__}.{name}"


# -- a kind defined in a test: one class plus register_modality ---------------------------------
class ToySpec(ModalitySpec):
    kind: Literal["toy"] = "toy"
    dim: int = 3


class ToyModality(Modality):
    """3-vectors stored as integers in tenths; a row whose first entry is negative is missing."""

    kind = "toy"
    spec_class = ToySpec
    calls: list[str] = []

    @classmethod
    def claims_array(cls, arr):
        return False  # only read when a schema names the kind

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        cls.calls.append(name)
        if not isinstance(arr, np.ndarray) or arr.shape[1:] != (3,):
            raise InputError(f"toy array {name!r} must be [N, 3], got {getattr(arr, 'shape', None)}")
        return arr.astype(np.float32) / 10, arr[:, 0] >= 0, None

    @classmethod
    def claims_values(cls, values):
        """Metadata cells like "10/20/30" (strings, which the built-in text kind would take)."""
        return all(isinstance(v, str) and len(v.split("/")) == 3 for v in values)

    @classmethod
    def claims_arrow(cls, arrow_type):
        """Fixed-size lists of 3 integers (which the built-in vector kind would take)."""
        import pyarrow as pa

        return pa.types.is_fixed_size_list(arrow_type) and arrow_type.list_size == 3 and \
            pa.types.is_integer(arrow_type.value_type)

    @classmethod
    def read_arrow(cls, name, column):
        return np.asarray(column.to_pylist(), dtype=np.int64), None, None

    @classmethod
    def read_column(cls, table, column, classes=None):
        cls.calls.append(column)
        tenths = np.array([[int(t) for t in str(r[column]).split("/")] for r in table.rows])
        return tenths.astype(np.float32) / 10, tenths[:, 0] >= 0, None

    @classmethod
    def raw_array(cls, values):
        return np.round(np.asarray(values) * 10).astype(np.int64)

    @classmethod
    def summarize(cls, values, present, class_names=None):
        return {"shape": [3], "dtype": "toy"}


@pytest.fixture
def toy_kind():
    register_modality(ToyModality)
    ToyModality.calls.clear()
    yield ToyModality
    MODALITY_KINDS.pop("toy", None)


def test_a_registered_kind_is_read_by_its_own_class(toy_kind, tmp_path):
    x = np.array([[10, 20, 30], [-1, 0, 0], [5, 5, 5], [0, 1, 2]])
    label = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "toy.npz", x=x, label=label)
    raw = load_arrays(tmp_path / "toy.npz", schema={"x": "toy"})
    assert toy_kind.calls == ["x"]
    assert raw.kinds == {"x": "toy", "label": "categorical"}
    assert np.allclose(raw.modalities["x"], x / 10) and raw.modalities["x"].dtype == np.float32
    assert raw.mask["x"].tolist() == [True, False, True, True]

    # written by the class's raw_array in omnivae's layout, read back by read_array with the kind recorded
    back = load_arrays(save_npz(raw, tmp_path / "again.npz"))
    assert back.kinds == raw.kinds and toy_kind.calls == ["x", "x"]
    assert np.allclose(back.modalities["x"], raw.modalities["x"]) and back.mask["x"].tolist() == [True, False, True, True]

    from omnivae.data.inspect import describe

    assert describe(raw)["modalities"]["x"]["dtype"] == "toy"


def test_a_registered_kind_claims_metadata_cells_and_parquet_columns(toy_kind, tmp_path):
    """Readers ask the kinds to claim unlabelled data, a user's kinds before the built-in ones."""
    from PIL import Image

    from omnivae.data.folder import load_folder

    cells = ["10/20/30", "-1/0/0", "5/5/5", "0/1/2"]
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text("".join(
        f'{{"file_name": "{i}.png", "x": "{c}", "note": "a long note {i}"}}\n' for i, c in enumerate(cells)))
    raw = load_folder(tmp_path)
    assert raw.kinds["x"] == "toy" and raw.kinds["note"] == "text" and toy_kind.calls == ["x"]
    assert np.allclose(raw.modalities["x"][0], [1, 2, 3]) and raw.mask["x"].tolist() == [True, False, True, True]

    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    table = pa.table({"x": pa.array([[10, 20, 30], [5, 5, 5]], type=pa.list_(pa.int64(), 3)),
                      "y": pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float64(), 2))})
    pq.write_table(table, tmp_path / "t.parquet")
    raw = load_arrays(tmp_path / "t.parquet")
    assert raw.kinds == {"x": "toy", "y": "vector"}
    assert np.allclose(raw.modalities["x"], [[1, 2, 3], [0.5, 0.5, 0.5]])


def test_without_a_users_kind_the_built_in_kinds_claim_the_same_data(tmp_path):
    from PIL import Image

    from omnivae.data.folder import load_folder

    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text("".join(
        f'{{"file_name": "{i}.png", "x": "{c}", "n": {i}.5}}\n' for i, c in enumerate(["1/2/3", "4/5/6", "7/8/9", "1/1/1"])))
    assert {k: v for k, v in load_folder(tmp_path).kinds.items() if k != "image"} == {"x": "text", "n": "vector"}


def test_a_kind_without_array_reading_says_so(tmp_path):
    class Plain(Modality):
        kind = "plain"
        spec_class = ToySpec

    register_modality(Plain)
    try:
        np.savez(tmp_path / "p.npz", x=np.zeros((2, 3)))
        with pytest.raises(InputError, match="kind 'plain' cannot be read from an array"):
            load_arrays(tmp_path / "p.npz", schema={"x": "plain"})
    finally:
        MODALITY_KINDS.pop("plain", None)
