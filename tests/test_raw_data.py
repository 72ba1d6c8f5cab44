"""RawData (paired examples before preprocessing) and TensorData (prepared tensors)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnivae import Batch, InputError, RawData, build_model
from omnivae.data.tensors import TensorData, batch_loader


def images(n):
    return np.zeros((n, 1, 8, 8), dtype=np.uint8)


def test_lengths_must_match():
    with pytest.raises(InputError, match="different numbers of examples"):
        RawData({"image": images(4), "label": np.arange(3)}, {"image": "image", "label": "categorical"})
    with pytest.raises(InputError, match="target 'digit'"):
        RawData({"image": images(4)}, {"image": "image"}, targets={"digit": np.arange(5)})
    with pytest.raises(InputError, match="at least one modality"):
        RawData({}, {})


@pytest.mark.parametrize("kinds", [{"image": "picture"}, {}, {"image": None}])
def test_bad_or_missing_kind(kinds):
    with pytest.raises(InputError, match="'image'.*kind"):
        RawData({"image": images(2)}, kinds)


def test_default_masks_and_empty_captions():
    raw = RawData({"text": ["a red square", "", None, "   ", "x"], "image": images(5)},
                  {"text": "text", "image": "image"})
    assert raw.mask["text"].tolist() == [True, False, False, False, True]
    assert raw.mask["image"].tolist() == [True] * 5
    assert raw.mask["text"].dtype == bool and len(raw) == 5 and raw.names == ["text", "image"]


def test_explicit_mask_is_kept_and_checked():
    raw = RawData({"image": images(3)}, {"image": "image"}, {"image": [1, 0, 1]})
    assert raw.mask["image"].dtype == bool and raw.mask["image"].tolist() == [True, False, True]
    with pytest.raises(InputError, match=r"mask of 'image'.*\(3,\)"):
        RawData({"image": images(3)}, {"image": "image"}, {"image": [True, False]})


@pytest.mark.parametrize("args, pattern", [
    (({"a": None}, {"a": "vector"}), "modality 'a'.*NoneType"),
    (({"a": 5}, {"a": "vector"}), "modality 'a'.*int"),
    (({"a": np.array(0.0)}, {"a": "vector"}), "modality 'a'.*ndarray"),
    (({"a": "a caption"}, {"a": "text"}), "modality 'a'.*str"),
    (({"a": np.zeros(3)}, {"a": "vector"}, {}, {"t": None}), "target 't'.*NoneType"),
    (({"a": np.zeros(3)}, {"a": "vector"}, {"a": ["yes", "no", "yes"]}), "mask of 'a'.*True/False"),
    (({"a": np.zeros(2)}, {"a": "vector"}, {"a": [0.5, 1.0]}), "mask of 'a'.*True/False"),
    (({"a": np.zeros(2)}, {"a": "vector"}, {"a": None}), "mask of 'a'.*True/False"),
    (({"a": np.zeros(2)}, ["vector"]), "kinds must be a dict"),
    (({"a": np.zeros(2)}, {"a": ["vector"]}), "'a'.*kind"),
])
def test_values_masks_and_targets_of_the_wrong_type(args, pattern):
    """Finding F4: len() of None, numbers or 0-d arrays used to raise a bare TypeError."""
    with pytest.raises(InputError, match=pattern):
        RawData(*args)


def make(n):
    return RawData({"image": np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8),
                    "text": [f"caption {i}" for i in range(n)]},
                   {"image": "image", "text": "text"}, targets={"id": np.arange(n)}, info={"source": "test"})


def test_subset_keeps_rows_aligned():
    raw = make(10)
    sub = raw.subset(np.array([7, 2]))
    assert sub.targets["id"].tolist() == [7, 2] and sub.modalities["text"] == ["caption 7", "caption 2"]
    assert sub.modalities["image"][:, 0, 0, 0].tolist() == [7, 2] and sub.info == {"source": "test"}
    assert raw.subset(slice(2, 5)).targets["id"].tolist() == [2, 3, 4]


@pytest.mark.parametrize("n, fractions, sizes", [
    (100, (0.8, 0.1, 0.1), [80, 10, 10]), (10, (0.9, 0.1), [9, 1]), (10, (1 / 3, 1 / 3, 1 / 3), [3, 4, 3]),
    (7, (1.0, 0.0), [7, 0]),
])
def test_split_sizes_disjoint_and_complete(n, fractions, sizes):
    parts = make(n).split(fractions, seed=3)
    assert [len(p) for p in parts] == sizes
    ids = [p.targets["id"].tolist() for p in parts]
    flat = [i for part in ids for i in part]
    assert sorted(flat) == list(range(n))  # disjoint and complete
    for p in parts:  # rows stay aligned across modalities
        assert p.modalities["text"] == [f"caption {i}" for i in p.targets["id"]]
    again = make(n).split(fractions, seed=3)
    assert [p.targets["id"].tolist() for p in again] == ids
    if n >= 10:
        assert [p.targets["id"].tolist() for p in make(n).split(fractions, seed=4)] != ids


@pytest.mark.parametrize("fractions", [(0.5, 0.4), (1.2, -0.2), (0.5, 0.6)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(InputError, match="fractions"):
        make(10).split(fractions)


# -- TensorData ---------------------------------------------------------------------------------
def test_tensor_data_from_raw_fills_placeholders(tiny_config, make_raw):
    mask = {"label": np.array([True, False] * 6)}
    raw = make_raw(12, names=("image", "label"), mask=mask)
    model = build_model(tiny_config("mvae"), raw)
    data = TensorData.from_raw(model, raw)
    assert len(data) == 12
    assert data.data["image"].dtype == torch.uint8 and data.data["image"].shape == (12, 1, 8, 8)
    assert torch.equal(data.data["image"], torch.from_numpy(raw.modalities["image"]))
    labels = torch.from_numpy(raw.modalities["label"])
    assert torch.equal(data.data["label"][::2], labels[::2]) and (data.data["label"][1::2] == 0).all()
    assert data.mask["label"].tolist() == mask["label"].tolist() and data.mask["image"].all()
    batch = data.__getitems__([0, 1, 2])
    assert isinstance(batch, Batch) and set(batch.mask) == {"label"}  # all-present masks are dropped
    assert batch.mask["label"].tolist() == [True, False, True]
    whole = data.batch()
    assert len(whole) == 12 and set(whole.mask) == {"image", "label"}


def test_batch_loader_covers_every_example_once(tiny_config, make_raw):
    raw = make_raw(10)
    model = build_model(tiny_config("mvae"), raw)
    data = TensorData.from_raw(model, raw)
    loader = batch_loader(data, batch_size=4, shuffle=True, seed=1)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 2]
    seen = torch.cat([b.data["label"] for b in batches])
    assert sorted(seen.tolist()) == sorted(raw.modalities["label"].tolist())


def test_tensor_data_errors(tiny_config, make_raw):
    model = build_model(tiny_config("mvae"))
    with pytest.raises(InputError, match="none of the model's modalities"):
        TensorData.from_raw(model, make_raw(4, names=("vector",)))
    with pytest.raises(InputError, match="different lengths"):
        TensorData({"a": torch.zeros(3), "b": torch.zeros(4)}, {})


def test_tensor_data_keeps_float_images(tiny_config):
    values = np.full((4, 1, 8, 8), 0.5, dtype=np.float32)
    raw = RawData({"image": values}, {"image": "image"})
    model = build_model(tiny_config("vae", ("image",)), raw)
    data = TensorData.from_raw(model, raw)
    torch.testing.assert_close(model.modalities["image"].features(data.data["image"]), torch.from_numpy(values))


def test_ids_follow_subsets_back_to_the_source_rows():
    names = np.array([f"row{i}" for i in range(10)])
    raw = RawData({"v": np.arange(10.0)[:, None]}, {"v": "vector"}, ids={"name": names})
    part = raw.subset([7, 3, 5]).subset([2, 0])
    assert part.ids["index"].tolist() == [5, 7] and part.ids["name"].tolist() == ["row5", "row7"]
    train, test = raw.split((0.7, 0.3))
    assert sorted([*train.ids["index"].tolist(), *test.ids["index"].tolist()]) == list(range(10))
    assert np.array_equal(train.modalities["v"][:, 0], train.ids["index"])
    with pytest.raises(InputError, match="ids 'name' has 2 entries, expected 3"):
        RawData({"v": np.zeros((3, 1))}, {"v": "vector"}, ids={"name": np.zeros(2)})


def test_concat_keeps_per_example_info_and_source_rows():
    from omnivae.data.shapes import make_shapes

    raw = make_shapes(n=30, level="partial", image_size=16)
    train, val, test = raw.split((0.6, 0.2, 0.2), seed=1)
    both = RawData.concat([train, val, test])
    assert len(both) == 30 and sorted(both.ids["index"].tolist()) == list(range(30))
    for k, named in both.info["named"].items():  # per-example info follows its example
        assert np.array_equal(named, np.asarray(raw.info["named"][k])[both.ids["index"]])
    assert both.modalities["text"] == [raw.modalities["text"][i] for i in both.ids["index"]]
    assert len(both.subset(np.arange(5, 25))) == 20  # subsets of it work (they failed on the copied info)
