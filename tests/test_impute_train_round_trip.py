"""`omnivae impute` writes omnivae's .npz layout and `load_arrays` (so `omnivae train --data`)
reads it back exactly: kinds, masks, targets, class names and imputed flags."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from omnivae.data.arrays import load_arrays, save_npz
from omnivae.data.raw import RawData

runner = CliRunner()
N = 40
ONE_STEP = ["--set", "train.max_steps=1", "--set", "train.batch_size=16", "--set", "train.progress=false",
            "--set", "train.tensorboard=false", "--set", "train.num_threads=1", "--set", "model.model=mopoe", "--set", "model.latent_dim=4",
            "--set", "data.test_fraction=0.1", "--set", "train.patience=null"]


def invoke(*args):
    from omnivae.cli import app

    return runner.invoke(app, [str(a) for a in args])


def user_data(tmp_path):
    """An .npz as a user saves it (NaN rows, "" captions and labels for missing) and its schema."""
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(N, 4)).astype(np.float32)
    vec[::5] = np.nan
    animal = np.array([("cat", "dog", "owl")[i % 3] for i in range(N)])
    animal[3::9] = ""
    caption = np.array([f"a {a or 'thing'} with {i % 4} legs" for i, a in enumerate(animal)])
    caption[1::7] = ""
    path = tmp_path / "data.npz"
    np.savez(path, vec=vec, animal=animal, caption=caption, digit=np.arange(N) % 4)
    (tmp_path / "data.schema.json").write_text(json.dumps({"animal": "categorical", "digit": "target"}))
    return path


def test_layout_round_trip_keeps_kinds_masks_targets_classes_and_ids(tmp_path):
    raw = load_arrays(user_data(tmp_path))
    raw = raw.subset(np.arange(N)[::-1])  # ids: each example's row in data.npz
    back = load_arrays(save_npz(raw, tmp_path / "copy.npz"))
    assert back.kinds == raw.kinds == {"vec": "vector", "animal": "categorical", "caption": "text"}
    for name in raw.modalities:
        assert np.array_equal(back.mask[name], raw.mask[name]), name
    assert not back.mask["vec"].all() and not back.mask["caption"].all() and not back.mask["animal"].all()
    assert back.targets.keys() == raw.targets.keys() == {"digit", "animal"}
    for name in raw.targets:
        assert np.array_equal(back.targets[name], raw.targets[name]) and back.targets[name].dtype == np.int64
    assert back.info["classes"] == raw.info["classes"] == {"animal": ["cat", "dog", "owl"]}
    assert back.modalities["caption"] == raw.modalities["caption"]
    assert np.array_equal(back.modalities["vec"], raw.modalities["vec"], equal_nan=True)
    assert np.array_equal(back.ids["index"], np.arange(N)[::-1])


def test_layout_arrays_are_not_read_as_modalities(tmp_path):
    """mask__/target__ arrays and __kinds__ are the layout's, not modalities of their own."""
    raw = RawData({"v": np.ones((4, 2), np.float32), "t": ["a", None, "c", "d"]}, {"v": "vector", "t": "text"},
                  {"v": np.array([True, False, True, True])}, targets={"y": np.array([0, 1, -1, 1])})
    back = load_arrays(save_npz(raw, tmp_path / "r.npz"))
    assert back.names == ["v", "t"] and list(back.targets) == ["y"]
    assert back.mask["v"].tolist() == [True, False, True, True] and back.mask["t"].tolist() == [True, False, True, True]
    np.savez(tmp_path / "hand.npz", v=np.ones((3, 2)), mask__v=np.array([1, 0, 1]), target__y=np.array([2, 0, 1]))
    hand = load_arrays(tmp_path / "hand.npz")  # written by hand, no __kinds__: kinds inferred
    assert hand.kinds == {"v": "vector"} and hand.mask["v"].tolist() == [True, False, True]
    assert hand.targets["y"].tolist() == [2, 0, 1]


@pytest.mark.slow
def test_impute_output_trains_a_model_with_the_same_modalities(tmp_path):
    from omnivae.io import load_model

    data = user_data(tmp_path)
    result = invoke("train", "--data", data, "--out", tmp_path / "first", *ONE_STEP)
    assert result.exit_code == 0, result.output
    result = invoke("impute", "--model", tmp_path / "first" / "model", "--data", data, "--out", tmp_path / "full.npz")
    assert result.exit_code == 0, result.output

    before, full = load_arrays(data), load_arrays(tmp_path / "full.npz")
    assert full.kinds == before.kinds and full.info["classes"] == before.info["classes"]
    assert all(m.all() for m in full.mask.values())
    for name in before.modalities:
        assert np.array_equal(full.info["imputed"][name], ~before.mask[name]), name
    assert full.targets.keys() == before.targets.keys()
    assert all(np.array_equal(full.targets[t], before.targets[t]) for t in before.targets)
    kept = before.mask["caption"]
    assert [c for c, k in zip(full.modalities["caption"], kept) if k] == \
        [c for c, k in zip(before.modalities["caption"], kept) if k]
    assert np.isfinite(full.modalities["vec"]).all()

    result = invoke("train", "--data", tmp_path / "full.npz", "--out", tmp_path / "second", *ONE_STEP)
    assert result.exit_code == 0, result.output
    first, second = load_model(tmp_path / "first" / "model"), load_model(tmp_path / "second" / "model")
    assert first.names == second.names
    for name in first.names:
        a, b = first.modalities[name].spec, second.modalities[name].spec
        assert a.kind == b.kind, name
        assert getattr(a, "classes", None) == getattr(b, "classes", None), name
        assert getattr(a, "dim", None) == getattr(b, "dim", None), name
    assert second.modalities["animal"].spec.classes == ["cat", "dog", "owl"]
