"""Model folders: round trips, refusal of pickles and damaged files, version and shape
checks, safe modality names and atomic replacement."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import omnivae
from omnivae import ConfigError, ModelFileError, build_model
from omnivae.io import CONFIG_FILE, WEIGHTS_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fitted_model(tiny_config, make_raw):
    """image + label + vector, with the vector's standardisation fitted on data."""
    torch.manual_seed(0)
    raw = make_raw(32, names=("image", "label", "vector"))
    return build_model(tiny_config("mopoe", ("image", "label", "vector")), raw)


@pytest.fixture
def saved(fitted_model, tmp_path):
    folder = tmp_path / "model"
    omnivae.save(fitted_model, folder)
    return folder


class CreatesFile:
    """Unpickling this object opens (creates) a file: the classic pickle payload."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_round_trip_gives_identical_outputs(fitted_model, saved, make_tensors):
    loaded = omnivae.load(saved)
    assert not loaded.training and loaded.config == fitted_model.config
    fitted_model.eval()
    data = make_tensors(6)
    assert torch.equal(loaded.encode(data), fitted_model.encode(data))
    assert torch.equal(loaded.encode(data, given=["vector"]), fitted_model.encode(data, given=["vector"]))
    a = fitted_model.generate(data, given=["label"], mean=True)
    b = loaded.generate(data, given=["label"], mean=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(loaded.modalities["vector"].mean, fitted_model.modalities["vector"].mean)
    assert not torch.equal(loaded.modalities["vector"].mean, torch.zeros(4))  # the fit was saved
    header = json.loads((saved / CONFIG_FILE).read_text())
    assert header["format"] == "omnivae-model" and header["omnivae_version"] == omnivae.__version__
    assert set(p.name for p in saved.iterdir()) == {CONFIG_FILE, WEIGHTS_FILE}


def test_planted_pickle_is_refused_and_never_runs(saved, tmp_path):
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(CreatesFile(control)))  # the payload is real: unpickling runs it
    assert control.exists()
    marker = tmp_path / "marker"
    (saved / "extra.pkl").write_bytes(pickle.dumps(CreatesFile(marker)))
    with pytest.raises(ModelFileError, match="extra.pkl"):
        omnivae.load(saved)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "weights.bin", "sub/state.ckpt", "noext"])
def test_other_file_types_are_refused(saved, tmp_path, name):
    marker = tmp_path / "marker"
    (saved / name).parent.mkdir(exist_ok=True)
    torch.save({"x": CreatesFile(marker)}, saved / name)
    with pytest.raises(ModelFileError, match="never loaded"):
        omnivae.load(saved)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_refused(saved, tmp_path):
    marker = tmp_path / "marker"
    (saved / WEIGHTS_FILE).write_bytes(pickle.dumps(CreatesFile(marker)))
    with pytest.raises(ModelFileError, match="cannot be read"):
        omnivae.load(saved)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 4, 100, 0.5, -1])
def test_truncated_weights(saved, keep):
    path = saved / WEIGHTS_FILE
    blob = path.read_bytes()
    n = int(len(blob) * keep) if isinstance(keep, float) else (len(blob) + keep if keep < 0 else keep)
    path.write_bytes(blob[:n])
    with pytest.raises(ModelFileError, match=WEIGHTS_FILE):
        omnivae.load(saved)


def test_missing_files(saved, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        omnivae.load(tmp_path / "nowhere")
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        omnivae.load(saved)
    (saved / CONFIG_FILE).unlink()
    with pytest.raises(ModelFileError, match="config.json is missing"):
        omnivae.load(saved)


def rewrite_header(folder, change):
    header = json.loads((folder / CONFIG_FILE).read_text())
    change(header)
    (folder / CONFIG_FILE).write_text(json.dumps(header))


@pytest.mark.parametrize("change, pattern", [
    (lambda h: h.update(format="something-else"), "not an omnivae model"),
    (lambda h: h.pop("format"), "not an omnivae model"),
    (lambda h: h.pop("config"), "not an omnivae model"),
    (lambda h: h.update(omnivae_version="0.2.0"), "cannot read it"),
    (lambda h: h.update(omnivae_version="1.0.0"), "cannot read it"),
    (lambda h: h.update(omnivae_version="99.1"), "cannot read it"),
    (lambda h: h.update(omnivae_version="banana"), "unreadable"),
    (lambda h: h["config"].update(latent_dim="big"), "latent_dim"),
    (lambda h: h["config"].update(mystery=1), "mystery"),
])
def test_bad_config_json(saved, change, pattern):
    rewrite_header(saved, change)
    with pytest.raises(ModelFileError, match=pattern):
        omnivae.load(saved)


@pytest.mark.parametrize("text", ['{"format": "omnivae-model", "config": {', "[1, 2]", "\xff\xfe"])
def test_config_json_not_json_or_not_a_mapping(saved, text):
    (saved / CONFIG_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(ModelFileError):
        omnivae.load(saved)


def test_config_json_without_version(saved):
    rewrite_header(saved, lambda h: h.pop("omnivae_version"))
    with pytest.raises(ModelFileError):
        omnivae.load(saved)


@pytest.mark.parametrize("value", [None, [1, 2], "mopoe"])
def test_config_json_with_non_mapping_config(saved, value):
    rewrite_header(saved, lambda h: h.update(config=value))
    with pytest.raises(ModelFileError):
        omnivae.load(saved)


def test_config_json_with_impossible_modality(saved):
    rewrite_header(saved, lambda h: h["config"]["modalities"]["label"].update(num_classes=1))
    with pytest.raises(ModelFileError):
        omnivae.load(saved)


def test_wrong_tensor_shape_is_named(saved):
    path = saved / WEIGHTS_FILE
    state = load_file(str(path))
    key = "modalities.label.decoder.2.weight"
    assert key in state
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(path))
    with pytest.raises(ModelFileError, match=key.replace(".", r"\.")) as info:
        omnivae.load(saved)
    assert "wrong shapes" in str(info.value)


def test_missing_and_unexpected_tensors_are_named(saved):
    path = saved / WEIGHTS_FILE
    state = load_file(str(path))
    del state["modalities.vector.std"]
    state["modalities.vector.sneaky"] = torch.zeros(1)
    save_file(state, str(path))
    with pytest.raises(ModelFileError) as info:
        omnivae.load(saved)
    assert "modalities.vector.std" in str(info.value) and "modalities.vector.sneaky" in str(info.value)


def test_config_that_does_not_match_weights(saved):
    rewrite_header(saved, lambda h: h["config"].update(latent_dim=5))
    with pytest.raises(ModelFileError, match="wrong shapes"):
        omnivae.load(saved)


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", ".hidden", "", "x" * 65, "1abc", "a b",
                                  "tokenizer.json/.."])
def test_unsafe_modality_names_are_refused(tiny_config, name):
    cfg = tiny_config("mvae")
    cfg["modalities"] = {name: cfg["modalities"]["image"], "label": cfg["modalities"]["label"]}
    with pytest.raises(ConfigError, match="modality name"):
        build_model(cfg)


def test_modality_name_with_trailing_newline_is_refused(tiny_config):
    cfg = tiny_config("mvae")
    cfg["modalities"] = {"abc\n": cfg["modalities"]["image"], "label": cfg["modalities"]["label"]}
    with pytest.raises(ConfigError, match="modality name"):
        build_model(cfg)


def test_saving_over_a_folder_replaces_it_without_leftovers(fitted_model, saved, tiny_config, make_tensors):
    (saved / "stale-notes.txt").write_text("from an older save")
    torch.manual_seed(1)
    other = build_model(tiny_config("mopoe", ("image", "label", "vector")))
    omnivae.save(other, saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]  # no temp or .old folders
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    data = make_tensors(3)
    assert torch.equal(omnivae.load(saved).encode(data), other.eval().encode(data))
    assert not torch.equal(omnivae.load(saved).encode(data), fitted_model.eval().encode(data))


def test_failed_save_leaves_old_folder_and_no_temp(fitted_model, saved, monkeypatch, make_tensors):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("omnivae.io.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        omnivae.save(fitted_model, saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_save_creates_parents_and_model_save_method(fitted_model, tmp_path):
    folder = tmp_path / "a" / "b" / "model"
    fitted_model.save(folder)
    assert (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
    assert omnivae.load(folder).config == fitted_model.config


def failing_second_replace(monkeypatch, fail):
    """os.replace that calls fail() instead of its second rename (the swap of the new folder in)."""
    calls, replace = [], os.replace

    def patched(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            fail()
        replace(src, dst)
    monkeypatch.setattr(os, "replace", patched)


def test_failed_swap_puts_the_old_folder_back(fitted_model, saved, tiny_config, monkeypatch, make_tensors):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def fail():
        raise OSError("rename failed")
    failing_second_replace(monkeypatch, fail)
    with pytest.raises(OSError, match="rename failed"):
        omnivae.save(build_model(tiny_config("mopoe", ("image", "label", "vector"))), saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_save_killed_between_the_renames_loads_the_previous_folder(fitted_model, saved, tiny_config, make_tensors,
                                                                     monkeypatch):
    torch.manual_seed(1)
    other = build_model(tiny_config("mopoe", ("image", "label", "vector")))
    pid = os.fork()
    if pid == 0:  # the child dies right before its second rename: no cleanup runs
        try:
            failing_second_replace(monkeypatch, lambda: os._exit(9))
            omnivae.save(other, saved)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9
    assert not saved.exists() and [p.name for p in saved.parent.glob(".model.old-*")]
    data = make_tensors(3)
    assert torch.equal(omnivae.load(saved).encode(data), fitted_model.eval().encode(data))  # old or new, never none
    assert saved.is_dir() and not list(saved.parent.glob(".model.old-*"))  # put back in place
