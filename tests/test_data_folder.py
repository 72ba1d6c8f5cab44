"""The user's own folder: images + metadata.jsonl/csv (load_folder) and its streaming twin."""
from __future__ import annotations

import csv
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from omnivae.data.folder import DataWarning, load_folder
from omnivae.errors import InputError

ANIMALS = ["cat", "dog", "owl"]


def image_array(i: int, size=(16, 16), channels: int = 3) -> np.ndarray:
    """A deterministic uint8 [H,W,C] (or [H,W]) picture for row i."""
    rng = np.random.default_rng(i)
    a = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return a[..., 0] if channels == 1 else a


def make_folder(root, n: int = 12, fmt: str = "jsonl", size=(16, 16), channels: int = 3, rows=None):
    """n images 0.png.. plus metadata: caption (text), label (categorical), emb (list), score (float)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(image_array(i, size, channels)).save(root / f"{i}.png")
    rows = rows or [{"file_name": f"{i}.png", "caption": f"a {ANIMALS[i % 3]} number {i}",
                     "label": ANIMALS[i % 3], "emb": [i * 0.5, 1.0 - i], "score": i / 10 + 0.05}
                    for i in range(n)]
    write_metadata(root, rows, fmt)
    return root


def write_metadata(root, rows, fmt="jsonl"):
    if fmt == "jsonl":
        (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, list) else "" if v is None else v) for k, v in r.items()})


def load_quietly(root, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = load_folder(root, **options)
    return raw, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_kinds_values_and_targets(tmp_path, fmt):
    raw, caught = load_quietly(make_folder(tmp_path / "d", fmt=fmt))
    assert caught == []
    assert raw.kinds == {"image": "image", "caption": "text", "label": "categorical", "emb": "vector",
                         "score": "vector"}
    images = raw.modalities["image"]
    assert images.shape == (12, 3, 16, 16) and images.dtype == np.uint8
    assert np.array_equal(images[5], image_array(5).transpose(2, 0, 1))
    assert raw.modalities["caption"][4] == "a dog number 4"
    assert raw.info["classes"]["label"] == ANIMALS  # sorted names
    assert raw.modalities["label"].tolist() == [i % 3 for i in range(12)]
    assert np.array_equal(raw.targets["label"], raw.modalities["label"])
    assert raw.modalities["emb"].shape == (12, 2) and raw.modalities["emb"][3].tolist() == [1.5, -2.0]
    assert raw.modalities["score"].shape == (12, 1) and raw.modalities["score"].dtype == np.float32
    assert all(m.all() for m in raw.mask.values())
    assert raw.info["source"] == "folder" and raw.info["metadata"] == f"metadata.{fmt}"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_missing_cells_mark_the_modality_missing(tmp_path, fmt):
    rows = [{"file_name": f"{i}.png", "caption": f"a {ANIMALS[i % 3]} number {i}", "label": ANIMALS[i % 3],
             "score": i / 10 + 0.05} for i in range(12)]
    rows[1]["caption"] = ""
    rows[2]["caption"] = None
    rows[3]["caption"] = "   "
    rows[4]["label"] = None
    rows[5]["score"] = float("nan") if fmt == "jsonl" else "nan"
    del rows[6]["score"]
    raw, caught = load_quietly(make_folder(tmp_path / "d", fmt=fmt, rows=rows))
    assert len(raw) == 12  # nothing dropped
    assert np.flatnonzero(~raw.mask["caption"]).tolist() == [1, 2, 3]
    assert raw.modalities["caption"][1] is None and raw.modalities["caption"][0] == "a cat number 0"
    assert np.flatnonzero(~raw.mask["label"]).tolist() == [4] and raw.modalities["label"][4] == -1
    assert raw.targets["label"][4] == -1
    assert np.flatnonzero(~raw.mask["score"]).tolist() == [5, 6]
    assert raw.mask["image"].all()
    assert any("caption 3" in w and "0 skipped" in w for w in caught)  # the summary


def test_missing_and_corrupt_images(tmp_path):
    root = make_folder(tmp_path / "d", n=10)
    (root / "3.png").unlink()
    (root / "5.png").write_bytes(b"not a png at all")
    data = (root / "7.png").read_bytes()
    (root / "7.png").write_bytes(data[: len(data) // 2])  # truncated: the header reads, pixels do not
    raw, caught = load_quietly(root)
    assert len(raw) == 10
    assert np.flatnonzero(~raw.mask["image"]).tolist() == [3, 5, 7]
    assert raw.mask["caption"].all() and not raw.modalities["image"][3].any()
    assert any("'3.png'" in w and "does not exist" in w and "line 4" in w for w in caught)
    assert any("'5.png'" in w and "unreadable" in w and "line 6" in w for w in caught)
    assert any("'7.png'" in w and "unreadable" in w for w in caught)
    summary = [w for w in caught if "skipped" in w]
    assert summary and "image 3 (file not found 1, unreadable 2)" in summary[0]


def test_rows_with_nothing_present_are_skipped(tmp_path):
    rows = [{"file_name": f"{i}.png", "caption": f"picture {i}"} for i in range(8)]
    rows.append({"file_name": "gone.png", "caption": ""})  # nothing left in this row
    rows.append({"file_name": None, "caption": "text only row"})
    raw, caught = load_quietly(make_folder(tmp_path / "d", n=8, rows=rows))
    assert len(raw) == 9 and raw.modalities["caption"][-1] == "text only row"
    assert not raw.mask["image"][-1]
    assert any("1 skipped" in w for w in caught)


def test_more_than_half_images_lost_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", n=10)
    for i in range(6):
        (root / f"{i}.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="6 of 10 image files"):
            load_folder(root)


def test_mixed_sizes_are_resized_or_refused(tmp_path):
    root = make_folder(tmp_path / "d", n=6)
    Image.fromarray(image_array(9, (24, 20))).save(root / "2.png")
    raw, _ = load_quietly(root)
    assert raw.modalities["image"].shape == (6, 3, 16, 16)  # the most common size
    raw, _ = load_quietly(root, image_size=8)
    assert raw.modalities["image"].shape == (6, 3, 8, 8)
    with pytest.raises(InputError, match=r"'2.png'.*24x20.*16x16"):
        load_folder(root, resize="error")


def test_image_modes(tmp_path):
    root = make_folder(tmp_path / "d", n=4, channels=1)
    raw, _ = load_quietly(root)
    assert raw.modalities["image"].shape == (4, 1, 16, 16)
    assert np.array_equal(raw.modalities["image"][2, 0], image_array(2, channels=1))
    raw, _ = load_quietly(root, mode="RGB")
    assert raw.modalities["image"].shape == (4, 3, 16, 16)


def test_kind_inference_and_overrides(tmp_path):
    rows = [{"file_name": f"{i}.png",
             "digit": i % 4,  # few ints -> categorical
             "count": i * 7,  # many distinct ints -> vector
             "tag": "ab"[i % 2] + "x",  # few short strings -> categorical
             "phrase": ["red one", "blue one"][i % 2],  # strings with spaces -> text
             "note": f"n{i}"}  # many distinct strings -> text
            for i in range(12)]
    root = make_folder(tmp_path / "d", rows=rows)
    raw, caught = load_quietly(root)
    assert raw.kinds == {"image": "image", "digit": "categorical", "count": "vector", "tag": "categorical",
                         "phrase": "text", "note": "text"}
    assert raw.info["classes"]["digit"] == ["0", "1", "2", "3"] and raw.modalities["digit"][5] == 1
    assert raw.info["classes"]["tag"] == ["ax", "bx"]
    assert any("'note'" in w and "ignore" in w for w in caught)  # looks like an identifier
    raw, _ = load_quietly(root, kinds={"digit": "vector", "phrase": "categorical", "note": "ignore",
                                       "tag": "target"})
    assert raw.kinds == {"image": "image", "digit": "vector", "count": "vector", "phrase": "categorical"}
    assert raw.info["classes"]["phrase"] == ["blue one", "red one"]
    assert "tag" in raw.targets and "tag" not in raw.modalities


def test_declared_classes(tmp_path):
    root = make_folder(tmp_path / "d", n=9)
    raw, _ = load_quietly(root, classes={"label": ["owl", "dog", "cat", "eel"]})
    assert raw.info["classes"]["label"] == ["owl", "dog", "cat", "eel"]
    assert raw.modalities["label"][:3].tolist() == [2, 1, 0]
    with pytest.raises(InputError, match=r"line 3: label 'owl' of column 'label' is not one of"):
        load_folder(root, classes={"label": ["cat", "dog"]})


def test_uninferable_column_names_it_and_suggests_kinds(tmp_path):
    rows = [{"file_name": f"{i}.png", "mixed": i if i % 2 else f"s{i}"} for i in range(6)]
    root = make_folder(tmp_path / "d", n=6, rows=rows)
    with pytest.raises(InputError, match=r"column 'mixed'.*kinds=\{'mixed'"):
        load_folder(root)
    raw, _ = load_quietly(root, kinds={"mixed": "text"})
    assert raw.modalities["mixed"][:2] == ["s0", "1"]


def test_metadata_problems(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"metadata.jsonl.*metadata.csv"):
        load_folder(empty)
    root = make_folder(tmp_path / "d", n=3)
    with pytest.raises(InputError, match="no 'path' column.*'file_name'"):
        load_folder(root, image_column="path")
    with open(root / "metadata.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(InputError, match="metadata.jsonl line 4: not valid JSON"):
        load_folder(root)
    bad_list = make_folder(tmp_path / "e", n=3)
    write_metadata(bad_list, [{"file_name": f"{i}.png", "emb": [1.0] * (i + 1)} for i in range(3)])
    with pytest.raises(InputError, match="line 2: column 'emb' holds 2 numbers, earlier rows hold 1"):
        load_folder(bad_list)
    with pytest.raises(InputError, match="resize must be"):
        load_folder(root, resize="crop")


# -- streaming -------------------------------------------------------------------------------
def tiny_model(raw):
    from omnivae.models import build_model
    from omnivae.run import resolve_model_config

    cfg = {"model": "mopoe", "latent_dim": 4,
           "modalities": {"image": {"arch": "mlp", "hidden": [8]}, "label": {"hidden": [8]},
                          "emb": {"hidden": [8]}}}
    if importlib.util.find_spec("omnivae.modalities.text"):
        cfg["modalities"]["caption"] = {"hidden": 8, "embed_dim": 8}
    return build_model(resolve_model_config(cfg, raw), raw)


def test_lazy_folder_matches_in_memory(tmp_path):
    from omnivae.data.lazy import LazyImageFolder, lazy_loader
    from omnivae.data.tensors import TensorData

    root = make_folder(tmp_path / "d", n=14)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    rows[2]["caption"], rows[9]["label"] = "", None
    write_metadata(root, rows)
    (root / "4.png").unlink()
    (root / "6.png").write_bytes(b"broken")
    raw, _ = load_quietly(root)
    model = tiny_model(raw)
    full = TensorData.from_raw(model, raw).batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = LazyImageFolder(root)
    assert len(data) == len(raw) and data.kinds == raw.kinds
    assert not full.mask["label"][9] and not full.mask["image"][4]
    for workers in (0, 2):
        batches = list(lazy_loader(data, model, batch_size=5, num_workers=workers))
        assert [len(b) for b in batches] == [5, 5, 4]
        for name in model.names:
            got = torch.cat([b.data[name] for b in batches])
            assert torch.equal(got, full.data[name]), name
            assert torch.equal(torch.cat([b.present(name) for b in batches]), full.mask[name]), name
    sample = data.to_raw([0, 2])
    assert np.array_equal(sample.modalities["image"], raw.modalities["image"][[0, 2]])
    assert sample.targets["label"].tolist() == raw.targets["label"][[0, 2]].tolist()
    assert sample.ids["file_name"].tolist() == raw.ids["file_name"][[0, 2]].tolist()
    assert sample.ids["index"].tolist() == np.asarray(raw.ids.get("index", np.arange(len(raw))))[[0, 2]].tolist()


# -- end to end ------------------------------------------------------------------------------
def test_train_run_on_a_folder(tmp_path):
    pytest.importorskip("omnivae.modalities.text")
    from omnivae.run import train_run

    rows = [{"file_name": f"{i}.png", "caption": "" if i % 7 == 3 else f"a {ANIMALS[i % 3]} picture"}
            for i in range(40)]
    root = make_folder(tmp_path / "d", n=40, rows=rows)
    config = {"data": {"source": "folder", "options": {"path": str(root)}},
              "model": {"model": "mopoe", "latent_dim": 4,
                        "modalities": {"image": {"arch": "mlp", "hidden": [32]},
                                       "caption": {"hidden": 16, "embed_dim": 8}}},
              "train": {"max_epochs": 1, "progress": False, "tensorboard": False, "batch_size": 8}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        result = train_run(config, tmp_path / "run")
    assert set(result.model.names) == {"image", "caption"}
    assert result.model.modalities["image"].spec.shape == (3, 16, 16)
    assert (tmp_path / "run" / "model").is_dir()
    assert not result.splits.train.mask["caption"].all()  # missing captions kept, masked
