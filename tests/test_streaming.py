"""`omnivae train` with data.stream: a folder read batch by batch from disk (DataLoader workers
decode the images) trains on the same rows as the in-memory path, validates, and resumes."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
import torch
from PIL import Image
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.data.lazy import LazyRows
from omnivae.data.sources import load_source
from omnivae.errors import ConfigError
from omnivae.run import RunConfig, split_data, stream_splits, train_run

runner = CliRunner()
N = 50
MODEL = ["--set", "model.model=mvae", "--set", "model.latent_dim=4", "--set", "model.conditional_prior=null",
         "--set", "model.modalities.image.arch=mlp", "--set", "model.modalities.image.hidden=[16]",
         "--set", "model.modalities.shape.hidden=[8]"]
TRAIN = ["--set", "train.batch_size=8", "--set", "train.progress=false", "--set", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """N 8x8 RGB images (one bright band per class) + a shape label, as metadata.jsonl."""
    root = tmp_path_factory.mktemp("streamed")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N):
        label = i % 3
        a = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
        a[label * 2:label * 2 + 2] = 250
        Image.fromarray(a).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "shape": ["circle", "square", "star"][label]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def train_cli(args: list[str]):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return result


def record(run) -> dict:
    return json.loads((run / "omnivae-run.json").read_text())["training"]


def test_streamed_run_trains_on_the_in_memory_rows(folder, tmp_path):
    common = ["--data", str(folder), *MODEL, *TRAIN, "--set", "train.max_epochs=1"]
    train_cli([*common, "--out", str(tmp_path / "memory")])
    train_cli([*common, "--out", str(tmp_path / "stream"), "--set", "data.stream=true",
               "--set", "train.num_workers=2", "--set", "data.stream_sample=20"])
    memory, stream = record(tmp_path / "memory"), record(tmp_path / "stream")
    assert stream["examples"] == memory["examples"] == {"train": 40, "val": 5, "test": 5}
    assert stream["steps"] == memory["steps"] == 5 and stream["epochs"] == 1  # ceil(40 / 8) steps in one epoch
    assert stream["phases"]["fit_steps"] == 5 and stream["phases"]["fit"]["validation_s"] > 0
    # the same rows in each part, in the same order
    config = RunConfig.from_dict({"data": {"source": "folder", "options": {"path": str(folder)}, "stream": True}})
    rows, sample = stream_splits(config)
    in_memory = split_data(load_source(config.data), config)
    for part in ("train", "val", "test"):
        assert getattr(rows, part).rows.tolist() == getattr(in_memory, part).ids["index"].tolist()
    assert len(sample) == 40 and np.array_equal(sample.modalities["image"], in_memory.train.modalities["image"])


def test_streamed_batches_match_the_in_memory_tensors(folder):
    from omnivae.data.tensors import TensorData, batch_loader
    from omnivae.models import build_model
    from omnivae.run import resolve_model_config

    config = RunConfig.from_dict({"data": {"source": "folder", "options": {"path": str(folder)}, "stream": True,
                                           "stream_sample": 7}})
    rows, sample = stream_splits(config)
    assert len(sample) == 7
    model = build_model(resolve_model_config({"model": "mvae", "latent_dim": 4, "conditional_prior": None}, sample),
                        sample)
    streamed = LazyRows(rows.train.folder, rows.train.rows, model)
    whole = TensorData.from_raw(model, split_data(load_source(config.data), config).train)
    for workers in (0, 2):
        batches = list(batch_loader(streamed, 16, shuffle=False, num_workers=workers))
        assert [len(b) for b in batches] == [16, 16, 8]
        for name in ("image", "shape"):
            assert torch.equal(torch.cat([b.data[name] for b in batches]), whole.data[name])


def test_streamed_run_resumes(folder, tmp_path):
    run = tmp_path / "run"
    train_cli(["--data", str(folder), *MODEL, *TRAIN, "--out", str(run), "--set", "data.stream=true",
               "--set", "train.num_workers=1", "--set", "train.max_epochs=1"])
    assert record(run)["steps"] == 5
    train_cli(["--resume", str(run), "--set", "train.max_epochs=3"])
    again = record(run)
    assert again["epochs"] == 3 and again["steps"] == 15 and again["examples"]["train"] == 40
    assert again["phases"]["fit_steps"] == 10  # this call trained the two epochs left


def test_stream_options_are_checked(folder, tmp_path):
    with pytest.raises(ConfigError, match="stream: true needs the source folder"):
        RunConfig.from_dict({"data": {"source": "shapes", "stream": True}})
    with pytest.raises(ConfigError, match="cannot be combined with labelled"):
        RunConfig.from_dict({"data": {"source": "folder", "options": {"path": str(folder)}, "stream": True,
                                      "labelled": 10}})
    with pytest.raises(ConfigError, match="stream_sample"):
        RunConfig.from_dict({"data": {"source": "folder", "stream": True, "stream_sample": 0}})
    with pytest.raises(ConfigError, match="unexpected keyword argument 'n'"):
        train_run({"data": {"source": "folder", "options": {"path": str(folder), "n": 3}, "stream": True}},
                  tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=30))
def test_packed_strings_give_back_every_string_and_gap(items):
    from omnivae.data.lazy import PackedStrings

    packed = PackedStrings(items)
    assert len(packed) == len(items)
    assert [packed[i] for i in range(len(items))] == items


def test_streamed_folder_holds_captions_and_paths_packed_and_reads_them_back(tmp_path):
    """200,000 rows as Python lists cost ~300 MB (and forked workers copy what they touch): the
    lazy folder keeps paths and captions packed, and reads back what load_folder reads."""
    from omnivae.data.folder import load_folder
    from omnivae.data.lazy import LazyImageFolder, PackedStrings

    rows = []
    for i in range(6):
        Image.fromarray(np.full((4, 4, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "caption": None if i == 2 else f"a t-shirt, number {i} — ünïcode"})
    rows.append({"file_name": "gone.png", "caption": "no picture"})  # a missing file: image marked missing
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for read in (LazyImageFolder, load_folder):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            data = read(tmp_path)
        assert any("gone.png" in str(w.message) for w in got) and any("kept with some" in str(w.message) for w in got)
        lazy, memory = (data, None) if read is LazyImageFolder else (lazy, data)
    assert isinstance(lazy.paths["image"], PackedStrings) and isinstance(lazy.values["caption"], PackedStrings)
    assert len(lazy) == len(memory) == 7
    for i in range(7):
        values, present = lazy[i]
        assert values["caption"] == memory.modalities["caption"][i]
        assert present["caption"] == bool(memory.mask["caption"][i]) and present["image"] == bool(memory.mask["image"][i])
        assert np.array_equal(values["image"], memory.modalities["image"][i])
    assert lazy.where(6) == "metadata.jsonl line 7"


def test_streamed_data_gets_a_worker_per_core_the_torch_threads_leave_free(folder, monkeypatch):
    from omnivae.data.tensors import TensorData
    from omnivae.models import build_model
    from omnivae.run import resolve_model_config
    from omnivae.train import trainer
    from omnivae.train.config import TrainConfig

    config = RunConfig.from_dict({"data": {"source": "folder", "options": {"path": str(folder)}, "stream": True}})
    rows, sample = stream_splits(config)
    model = build_model(resolve_model_config({"model": "mvae", "latent_dim": 4, "conditional_prior": None}, sample),
                        sample)
    streamed, in_memory = LazyRows(rows.train.folder, rows.train.rows, model), TensorData.from_raw(model, sample)
    default = trainer.OmniDataModule(streamed, None, TrainConfig())
    threads = torch.get_num_threads()
    try:
        for cores, used, workers in ((2, 2, 0), (2, 1, 1), (8, 2, 4), (1, 1, 0)):
            monkeypatch.setattr(trainer.os, "cpu_count", lambda cores=cores: cores)
            torch.set_num_threads(used)
            assert default.workers(streamed) == workers and default.workers(in_memory) == 0
        assert default.train_dataloader().num_workers == 0  # 1 core, 1 thread
    finally:
        torch.set_num_threads(threads)
    two = trainer.OmniDataModule(streamed, None, TrainConfig(accelerator="cpu", devices=2))
    try:
        monkeypatch.setattr(trainer.os, "cpu_count", lambda: 8)
        torch.set_num_threads(3)  # 2 processes x 3 threads leave 2 of 8 cores
        assert two.workers(streamed) == 2
    finally:
        torch.set_num_threads(threads)
    chosen = trainer.OmniDataModule(streamed, None, TrainConfig(num_workers=3))
    assert chosen.workers(streamed) == 3 and chosen.workers(in_memory) == 3
