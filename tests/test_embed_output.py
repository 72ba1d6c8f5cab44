"""`omnivae embed` output carries what joins it back to the data: each example's row (index),
the data's id column (a folder's file names) and its labels, in .npz, .csv and .parquet; .npy
stays the bare matrix."""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omnivae.data.folder import load_folder
from omnivae.errors import InputError
from omnivae.tasks.embed import embed, join_columns, load_embeddings, save_embeddings

runner = CliRunner()
LABELS = ["cat", "dog", None, "dog", "cat", "cat", "dog", "cat"]  # row 2 holds nothing: skipped


def invoke(*args):
    from omnivae.cli import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rows = []
    for i, label in enumerate(LABELS):
        name = None if label is None else f"img_{i}.png"
        if name:
            Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(root / name)
        rows.append({"file_name": name, "label": label})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.fixture(scope="module")
def saved_model(folder, tmp_path_factory):
    from omnivae.io import save_model
    from omnivae.models import build_model
    from omnivae.run import resolve_model_config

    raw = load_quietly(folder)
    config = resolve_model_config({"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [8]}, "label": {"hidden": [8]}}}, raw)
    path = tmp_path_factory.mktemp("model") / "model"
    save_model(build_model(config, raw), path)
    return path


def load_quietly(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_folder(folder)


def test_folder_data_keeps_file_names_and_metadata_rows(folder):
    raw = load_quietly(folder)
    rows = [i for i, label in enumerate(LABELS) if label is not None]
    assert raw.ids["index"].tolist() == rows
    assert raw.ids["file_name"].tolist() == [f"img_{i}.png" for i in rows]
    join = join_columns(raw)
    assert join["index"].tolist() == rows and join["id"].tolist() == raw.ids["file_name"].tolist()
    assert join["classes"] == {"label": ["cat", "dog"]}
    assert join["targets"]["label"].tolist() == [["cat", "dog"].index(LABELS[i]) for i in rows]


def test_cli_embed_writes_each_format_with_ids_and_labels(folder, saved_model, tmp_path):
    from omnivae.io import load_model

    raw = load_quietly(folder)
    want = embed(load_model(saved_model), raw)
    rows = [i for i, label in enumerate(LABELS) if label is not None]
    names = [f"img_{i}.png" for i in rows]
    labels = [LABELS[i] for i in rows]
    for suffix in ("npy", "npz", "csv", "parquet"):
        if suffix == "parquet":
            pytest.importorskip("pyarrow")
        out = tmp_path / f"z.{suffix}"
        result = invoke("embed", "--model", saved_model, "--data", folder, "--out", out, "--batch-size", "3")
        assert result.exit_code == 0, result.output
        assert np.allclose(load_embeddings(out), want, atol=1e-6), suffix
    assert np.load(tmp_path / "z.npy").shape == (len(rows), 4)  # the matrix alone
    with np.load(tmp_path / "z.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["classes__label", "embeddings", "id", "index", "target__label"]
        assert z["index"].tolist() == rows and z["id"].tolist() == names
        assert z["target__label"].tolist() == [["cat", "dog"].index(v) for v in labels]
        assert z["classes__label"].tolist() == ["cat", "dog"]
    with open(tmp_path / "z.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["index", "id", "target__label", "z_0", "z_1", "z_2", "z_3"]
    assert [int(r["index"]) for r in table] == rows and [r["id"] for r in table] == names
    assert [r["target__label"] for r in table] == labels
    import pyarrow.parquet as pq

    frame = pq.read_table(tmp_path / "z.parquet").to_pydict()
    assert frame["index"] == rows and frame["id"] == names and frame["target__label"] == labels


@pytest.mark.slow
def test_cli_embed_split_of_a_run_keeps_source_rows(tmp_path):
    """For a built-in source, index is each example's row before the split; labels come along."""
    from omnivae.data.shapes import make_shapes

    result = invoke("train", "--set", "data.source=shapes", "--set", "data.options.n=60",
                    "--set", "data.options.image_size=16", "--set", "data.options.level=easy",
                    "--set", "model.model=mvae", "--set", "model.latent_dim=4",
                    "--set", "model.modalities.image.arch=mlp", "--set", "model.modalities.text.max_len=6",
                    "--set", "train.max_steps=1", "--set", "train.patience=null", "--set", "train.progress=false",
                    "--set", "train.tensorboard=false", "--set", "train.batch_size=16", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    result = invoke("embed", "--run", tmp_path / "run", "--out", tmp_path / "z.npz", "--no-progress")
    assert result.exit_code == 0, result.output
    full = make_shapes(n=60, image_size=16, level="easy")
    with np.load(tmp_path / "z.npz", allow_pickle=False) as z:
        index = z["index"]
        assert len(index) == 6 and len(set(index.tolist())) == 6 and "id" not in z.files
        for name in full.targets:
            assert np.array_equal(z[f"target__{name}"], full.targets[name][index]), name


def test_save_embeddings_checks_lengths_and_suffixes(tmp_path):
    z = np.zeros((3, 2), np.float32)
    with pytest.raises(InputError, match="index: expected 3 entries"):
        save_embeddings(z, tmp_path / "z.npz", index=[0, 1])
    with pytest.raises(InputError, match="target__y: expected 3"):
        save_embeddings(z, tmp_path / "z.csv", targets={"y": [0, 1]})
    with pytest.raises(InputError, match=".npy, .npz, .csv, .parquet"):
        save_embeddings(z, tmp_path / "z.txt")
    path = save_embeddings(z, tmp_path / "z.csv", targets={"y": np.array([0, -1, 2])})
    with open(path, newline="") as fh:
        assert [r["target__y"] for r in csv.DictReader(fh)] == ["0", "", "2"]  # missing label: empty cell


def test_embed_reports_progress():
    from omnivae.data.raw import RawData
    from omnivae.models import build_model

    model = build_model({"model": "mvae", "latent_dim": 2, "modalities": {"v": {"kind": "vector", "dim": 3}}})
    raw = RawData({"v": np.zeros((10, 3), np.float32)}, {"v": "vector"})
    seen = []
    embed(model, raw, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 10), (8, 10), (10, 10)]
