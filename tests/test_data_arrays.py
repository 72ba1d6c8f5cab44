"""The user's own arrays: .npz, a folder of .npy files (memory-mapped or not), Parquet."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from omnivae.data.arrays import load_arrays
from omnivae.data.folder import DataWarning
from omnivae.errors import InputError

N = 10


def arrays(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(n, 3)).astype(np.float32)
    vec[2] = np.nan
    vec[4, 1] = np.nan  # one NaN entry makes the row missing
    label = (np.arange(n) % 3).astype(np.int64)
    label[5] = -1
    text = np.array([f"caption {i}" for i in range(n)])
    text[7] = ""
    return {"image": rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8), "label": label, "vec": vec,
            "text": text, "signal": rng.normal(size=(n, 2, 16)).astype(np.float32),
            "score": rng.normal(size=n)}


def check_common(raw, n: int = N):
    assert raw.kinds == {"image": "image", "label": "categorical", "vec": "vector", "text": "text",
                         "signal": "signal", "score": "vector"}
    assert len(raw) == n
    assert np.flatnonzero(~raw.mask["vec"]).tolist() == [2, 4]
    assert np.flatnonzero(~raw.mask["label"]).tolist() == [5]
    assert np.flatnonzero(~raw.mask["text"]).tolist() == [7] and raw.modalities["text"][7] is None
    assert raw.mask["image"].all() and raw.mask["signal"].all()
    assert raw.modalities["score"].shape == (n, 1) and raw.modalities["score"].dtype == np.float32
    assert raw.targets["label"].tolist() == raw.modalities["label"].tolist()


def test_npz(tmp_path):
    a = arrays()
    np.savez(tmp_path / "data.npz", **a)
    raw = load_arrays(tmp_path / "data.npz")
    check_common(raw)
    assert np.array_equal(raw.modalities["image"], a["image"])
    assert raw.info["format"] == "npz" and raw.info["source"] == "arrays"


def test_npy_folder_with_mmap(tmp_path):
    a = arrays()
    for name, value in a.items():
        np.save(tmp_path / f"{name}.npy", value)
    raw = load_arrays(tmp_path, mmap=True)
    check_common(raw)
    assert isinstance(raw.modalities["image"], np.memmap)  # not read up front
    assert isinstance(raw.modalities["vec"], np.memmap)
    assert np.array_equal(raw.subset([1, 3]).modalities["image"], a["image"][[1, 3]])
    assert not isinstance(load_arrays(tmp_path).modalities["image"], np.memmap)


def test_schema_argument_and_file(tmp_path):
    a = {"x": np.arange(N, dtype=np.int64) % 2, "y": np.random.default_rng(1).normal(size=(N, 4)),
         "animal": np.array(["cat", "dog"] * (N // 2)), "digit": np.arange(N) % 4}
    np.savez(tmp_path / "d.npz", **a)
    raw = load_arrays(tmp_path / "d.npz")
    assert raw.kinds == {"x": "categorical", "y": "vector", "animal": "text", "digit": "categorical"}
    (tmp_path / "schema.json").write_text(json.dumps(
        {"x": "vector", "animal": {"kind": "categorical", "classes": ["dog", "cat"]}, "digit": "target"}))
    raw = load_arrays(tmp_path / "d.npz")
    assert raw.kinds == {"x": "vector", "y": "vector", "animal": "categorical"}
    assert raw.modalities["x"].shape == (N, 1)
    assert raw.info["classes"]["animal"] == ["dog", "cat"] and raw.modalities["animal"][:2].tolist() == [1, 0]
    assert "digit" in raw.targets and "digit" not in raw.modalities
    raw = load_arrays(tmp_path / "d.npz", schema={"y": "ignore", "digit": "categorical"})  # overrides the file
    assert raw.kinds == {"x": "vector", "animal": "categorical", "digit": "categorical"}
    with pytest.raises(InputError, match=r"schema names \['nope'\]"):
        load_arrays(tmp_path / "d.npz", schema={"nope": "text"})
    with pytest.raises(InputError, match="schema entry 'x'"):
        load_arrays(tmp_path / "d.npz", schema={"x": "picture"})
    with pytest.raises(InputError, match="not one of the classes"):
        load_arrays(tmp_path / "d.npz", schema={"animal": {"kind": "categorical", "classes": ["cat"]}})


def test_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", text=np.array(["a", None], dtype=object), label=np.array([0, 1]))
    with pytest.raises(InputError, match="unpickle"):
        load_arrays(tmp_path / "obj.npz")
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "text.npy", np.array(["a", None], dtype=object), allow_pickle=True)
    for mmap in (False, True):
        with pytest.raises(InputError, match="unpickle"):
            load_arrays(folder, mmap=mmap)
    np.savez(tmp_path / "bytes.npz", text=np.array([b"a", b"b"]))
    with pytest.raises(InputError, match="unicode"):
        load_arrays(tmp_path / "bytes.npz")


def test_shape_problems(tmp_path):
    np.savez(tmp_path / "bad.npz", a=np.zeros((4, 2, 2, 2, 2), dtype=np.float32))
    with pytest.raises(InputError, match=r"array 'a' of shape \[4, 2, 2, 2, 2\].*schema="):
        load_arrays(tmp_path / "bad.npz")
    np.savez(tmp_path / "len.npz", a=np.zeros((4, 2), dtype=np.float32), b=np.zeros(5, dtype=np.int64))
    with pytest.raises(InputError, match="different numbers of examples"):
        load_arrays(tmp_path / "len.npz")
    np.savez(tmp_path / "hwc.npz", img=np.zeros((3, 8, 6, 3), dtype=np.uint8))
    assert load_arrays(tmp_path / "hwc.npz").modalities["img"].shape == (3, 3, 8, 6)  # channels-last turned
    with pytest.raises(InputError, match="does not exist"):
        load_arrays(tmp_path / "nothing.npz")


def png_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), i * 20, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({
        "emb": pa.array([[float(i), 1.0] if i != 3 else None for i in range(6)], pa.list_(pa.float32())),
        "caption": pa.array(["a", "b b", None, "", "e", "f"]),
        "label": pa.array([0, 1, 2, None, 1, 0], pa.int64()),
        "size": pa.array([0.5, None, 1.5, 2.0, float("nan"), 3.0]),
        "kind": pa.array(["x", "y", "x", None, "y", "x"]).dictionary_encode(),
        "image": pa.array([{"bytes": png_bytes(i), "path": None} if i != 1 else None for i in range(6)]),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    raw = load_arrays(tmp_path / "t.parquet")
    assert raw.kinds == {"emb": "vector", "caption": "text", "label": "categorical", "size": "vector",
                         "kind": "categorical", "image": "image"}
    assert raw.modalities["emb"].shape == (6, 2) and np.flatnonzero(~raw.mask["emb"]).tolist() == [3]
    assert np.flatnonzero(~raw.mask["caption"]).tolist() == [2, 3]
    assert raw.modalities["label"].tolist() == [0, 1, 2, -1, 1, 0] and not raw.mask["label"][3]
    assert np.flatnonzero(~raw.mask["size"]).tolist() == [1, 4]
    assert raw.info["classes"]["kind"] == ["x", "y"] and raw.modalities["kind"].tolist() == [0, 1, 0, -1, 1, 0]
    assert raw.modalities["image"].shape == (6, 3, 8, 8) and np.flatnonzero(~raw.mask["image"]).tolist() == [1]
    assert raw.modalities["image"][2, 0, 0, 0] == 40
    raw = load_arrays(tmp_path / "t.parquet", schema={"caption": "categorical", "label": "vector"})
    assert raw.info["classes"]["caption"] == ["a", "b b", "e", "f"]
    assert np.flatnonzero(~raw.mask["label"]).tolist() == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        with pytest.raises(DataWarning, match="mmap"):
            load_arrays(tmp_path / "t.parquet", mmap=True)
