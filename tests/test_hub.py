"""Sharing through the Hugging Face Hub, against a local stand-in of its HTTP API
(tests/helpers/hub_server.py) driven by the real huggingface_hub client: push, pull and
omnivae.load("hf://...") round-trip bit for bit, the model card, revisions, refusal of
repositories holding pickles, and clean errors from the command line."""
from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import omnivae
from omnivae import ConfigError, ModelFileError, OmniVAEError
from omnivae.cli import app
from omnivae.hub import HubError, pull, push, split_repo

for _package in ("huggingface_hub", "fastapi", "uvicorn"):  # omnivae[hub], and [serve] for the stand-in
    pytest.importorskip(_package)
from helpers.hub_server import serve  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(base URL, store) of a Hub stand-in running for this module."""
    with serve(tmp_path_factory.mktemp("hub-store")) as running:
        yield running


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch):
    """HF_ENDPOINT at the stand-in, a fresh HF_HOME in tmp_path, online."""
    monkeypatch.setenv("HF_ENDPOINT", hub[0])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return hub


def build(tiny_config, seed: int):
    torch.manual_seed(seed)
    return omnivae.build_model(tiny_config("mvae", names=("image", "label")))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_config):
    """A run folder as training and evaluation leave it: model/, run.yaml, metrics.json, figures/."""
    run = tmp_path_factory.mktemp("runs") / "tiny-run"
    model = build(tiny_config, seed=0)
    omnivae.save(model, run / "model")
    (run / "run.yaml").write_text(yaml.safe_dump({
        "data": {"source": "folder", "options": {"path": str(run / "secret-data"), "image_size": 8},
                 "test_fraction": 0.1, "split_seed": 0},
        "model": model.config.to_dict(), "train": {"max_epochs": 1, "batch_size": 16, "seed": 0}}))
    (run / "metrics.json").write_text(json.dumps({"model": "mvae", "n_test": 5,
                                                  "coherence": {"image->label": {"all": 0.625}}}))
    (run / "figures").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(run / "figures" / "curves.png")
    return run, model


def assert_same_model(loaded, model):
    assert loaded.config.to_dict() == model.config.to_dict()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def said(result) -> str:
    """The command's output on one line (rich wraps long lines)."""
    return " ".join(result.output.split())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_push_then_load_round_trips_bit_for_bit(run_folder, hub_env, tmp_path, monkeypatch):
    (run, model), (base, store) = run_folder, hub_env
    assert push(run / "model", "user/tiny") == f"{base}/user/tiny"
    loaded = omnivae.load("hf://user/tiny")
    assert_same_model(loaded, model)
    folder = pull("user/tiny")
    assert folder.is_relative_to(tmp_path / "hf-home")  # HF_HOME, read when pulling
    for name in ("config.json", "model.safetensors"):
        assert (folder / name).read_bytes() == (run / "model" / name).read_bytes(), name
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["README.md", "config.json", "figures/curves.png", "metrics.json", "model.safetensors"]
    assert "user/tiny:.gitattributes" not in store.downloads

    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "omnivae" and {"omnivae", "mvae", "multimodal", "image"} <= set(front["tags"])
    assert "**`mvae`**" in card and "Wu & Goodman 2018" in card
    assert "| image | image | shape [1, 8, 8] |" in card and "| label | categorical | num_classes 3 |" in card
    assert 'omnivae.load("hf://user/tiny")' in card
    assert "| coherence.image->label.all | 0.625 |" in card and "image_size: `8`" in card
    assert "![curves](figures/curves.png)" in card
    assert str(run) not in card  # local paths (the data folder) stay private

    # the Hub unreachable: the copy cached above is used
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert_same_model(omnivae.load("hf://user/tiny"), model)


def test_revisions_and_repushing(run_folder, hub_env, tiny_config, tmp_path):
    run, model = run_folder
    other = build(tiny_config, seed=1)
    omnivae.save(other, tmp_path / "other")
    (tmp_path / "other" / "notes.txt").write_text("second version")
    push(run / "model", "user/versions")
    assert push(tmp_path / "other", "user/versions", revision="v1").endswith("/user/versions/tree/v1")
    assert_same_model(omnivae.load("hf://user/versions"), model)
    assert_same_model(omnivae.load("hf://user/versions@v1"), other)
    v1 = pull("user/versions", revision="v1")
    assert (v1 / "notes.txt").read_text() == "second version"
    card = (v1 / "README.md").read_text()  # a model folder outside a run folder: no data, metrics, figures
    assert "**`mvae`**" in card and "## Training data" not in card and "## Metrics" not in card
    # pushing again replaces the repository's files: no leftovers from the earlier upload
    push(tmp_path / "other", "user/versions")
    folder = pull("hf://user/versions@main")
    assert not (folder / "metrics.json").exists() and (folder / "notes.txt").is_file()
    assert_same_model(omnivae.load("hf://user/versions@main"), other)


@pytest.mark.parametrize("unsafe", ["weights.pkl", "model.pt", "sub/model.bin"])
def test_repository_with_a_pickle_is_refused(unsafe, run_folder, hub_env):
    from huggingface_hub import HfApi

    (run, _), (base, store) = run_folder, hub_env
    repo = f"user/evil-{unsafe.replace('/', '-').replace('.', '-')}"
    push(run / "model", repo)
    HfApi(endpoint=base).upload_file(path_or_fileobj=b"\x80\x04K\x01.", path_in_repo=unsafe, repo_id=repo)
    before = list(store.downloads)
    with pytest.raises(ModelFileError, match=rf"refusing hf://{repo}: it holds '{unsafe}'"):
        omnivae.load(f"hf://{repo}")
    result = runner.invoke(app, ["pull", repo, "--out", str(run.parent / "evil-out")])
    assert result.exit_code == 2 and "refusing" in said(result) and "Traceback" not in said(result)
    assert store.downloads == before  # refused before a single file was fetched


def test_cli_push_and_pull(run_folder, hub_env, tmp_path):
    (run, model), (base, _) = run_folder, hub_env
    result = runner.invoke(app, ["push", str(run / "model"), "user/cli", "--endpoint", base, "--private"])
    assert result.exit_code == 0, result.output
    assert f"{base}/user/cli" in said(result)
    from huggingface_hub import HfApi

    assert HfApi(endpoint=base).model_info("user/cli").private is True
    out = tmp_path / "pulled"
    result = runner.invoke(app, ["pull", "user/cli", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert_same_model(omnivae.load(out), model)  # a plain folder: no cache files, no symlinks
    assert not any(p.is_symlink() or p.name.startswith(".") for p in out.rglob("*"))
    result = runner.invoke(app, ["pull", "user/cli", "--out", str(out)])
    assert result.exit_code == 2 and "already exists and is not empty" in said(result)
    assert runner.invoke(app, ["pull", "hf://user/cli@main", "--out", str(out), "--overwrite"]).exit_code == 0


def test_unreachable_hub_is_a_clean_error(run_folder, hub_env, monkeypatch):
    run, _ = run_folder
    dead = f"http://127.0.0.1:{closed_port()}"
    result = runner.invoke(app, ["push", str(run / "model"), "user/x", "--endpoint", dead])
    assert result.exit_code == 2, result.output
    assert f"cannot reach the Hub at {dead}" in said(result) and "Traceback" not in said(result)
    monkeypatch.setenv("HF_ENDPOINT", dead)
    result = runner.invoke(app, ["pull", "user/x", "--out", str(run.parent / "x")])
    assert result.exit_code == 2 and f"cannot reach the Hub at {dead}" in said(result)
    with pytest.raises(HubError, match="cannot reach the Hub"):
        omnivae.load("hf://user/never-pulled")


def test_missing_repository_and_revision(hub_env, run_folder):
    with pytest.raises(HubError, match="no model repository user/nothing"):
        omnivae.load("hf://user/nothing")
    push(run_folder[0] / "model", "user/tiny")
    with pytest.raises(HubError, match="has no revision 'nope'"):
        omnivae.load("hf://user/tiny@nope")


@pytest.mark.parametrize("bad", ["hf://tiny", "hf://user/tiny@", "user/../x", "hf://a/b/c", "hf://user/t iny"])
def test_malformed_hub_names(bad):
    with pytest.raises(ConfigError, match="does not name a Hub model"):
        split_repo(bad)
    assert split_repo("hf://user/tiny@v1.0") == ("user/tiny", "v1.0")


def test_unsafe_model_folder_is_never_uploaded(run_folder, hub_env, tmp_path):
    run, model = run_folder
    omnivae.save(model, tmp_path / "model")
    (tmp_path / "model" / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFileError, match="extra.pkl"):
        push(tmp_path / "model", "user/never")
    with pytest.raises(HubError, match="no model repository user/never"):
        pull("user/never")


def test_missing_huggingface_hub_says_what_to_install(run_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    result = runner.invoke(app, ["push", str(run_folder[0] / "model"), "user/tiny"])
    assert result.exit_code == 2 and "pip install 'omnivae[hub]'" in said(result)
    with pytest.raises(OmniVAEError, match=r"omnivae\[hub\]"):
        omnivae.load("hf://user/tiny")
