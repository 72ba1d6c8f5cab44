"""`omnivae generate` writes outputs people can use: one PNG per image, .npy for vectors, JSON
values (not Python reprs) for text and labels; --seed and --temperature; --to lists."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.io import save_model
from omnivae.models import build_model

runner = CliRunner()
NAMES = ("image", "text", "label", "vector")


CAPTIONS = ("a red circle", "a blue square", "a green circle")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_raw, tiny_config):
    raw = make_raw(24, names=("image", "label", "vector"))
    raw.modalities["text"] = [CAPTIONS[y] for y in raw.modalities["label"]]
    raw.kinds["text"] = "text"
    raw.mask["text"] = np.ones(len(raw), dtype=bool)
    config = tiny_config("mopoe", names=("image", "label", "vector"))
    config["modalities"]["text"] = {"kind": "text", "hidden": 16, "embed_dim": 8, "max_len": 6}
    model = build_model(config, raw)
    folder = tmp_path_factory.mktemp("m") / "model"
    save_model(model, folder)
    return folder


def generate(model_dir, out, *args):
    result = runner.invoke(app, ["generate", "--model", str(model_dir), "--out", str(out), *args])
    return result, (json.loads((out / "outputs.json").read_text()) if result.exit_code == 0 else None)


def said(result) -> str:
    return " ".join(result.output.split())  # the console wraps long lines


def test_each_kind_is_written_in_its_own_form(model_dir, tmp_path):
    result, summary = generate(model_dir, tmp_path, "--from", "text", "a red circle", "a blue square",
                               "--n", "3", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert summary["inputs"] == ["a red circle", "a blue square"] and summary["seed"] == 5
    out = summary["outputs"]
    assert set(out) == {"image", "label", "vector"}
    for i, entry in enumerate(out["image"]):  # one PNG per sample, plus a grid per input
        assert len(entry["files"]) == 3
        for f in entry["files"]:
            with Image.open(tmp_path / f) as img:
                assert img.size == (8, 8)
        assert (tmp_path / entry["grid"]).is_file()
    for entry in out["vector"]:  # the n vectors of one input in one .npy file, and as JSON numbers
        arr = np.load(tmp_path / entry["file"], allow_pickle=False)
        assert arr.shape == (3, 4) and np.allclose(arr, np.array(entry["values"]), atol=1e-5)
    for entry in out["label"]:  # class indices as JSON integers, not "tensor(...)" strings
        assert len(entry["values"]) == 3 and all(isinstance(v, int) for v in entry["values"])
    assert "tensor(" not in (tmp_path / "outputs.json").read_text()


def test_text_outputs_are_json_strings(model_dir, tmp_path):
    result, summary = generate(model_dir, tmp_path, "--from", "label", "1", "--to", "text", "--n", "2")
    assert result.exit_code == 0, result.output
    values = summary["outputs"]["text"][0]["values"]
    assert len(values) == 2 and all(isinstance(v, str) and not v.startswith("(") for v in values)


def test_same_seed_same_outputs_and_temperature_zero_is_deterministic(model_dir, tmp_path):
    args = ("--from", "text", "a red circle", "--to", "vector", "--n", "4")
    _, a = generate(model_dir, tmp_path / "a", *args, "--seed", "11")
    _, b = generate(model_dir, tmp_path / "b", *args, "--seed", "11")
    _, c = generate(model_dir, tmp_path / "c", *args, "--seed", "12")
    assert a["outputs"] == b["outputs"]
    assert a["outputs"] != c["outputs"]
    assert a["temperature"] == 1.0  # unset, without a conditional prior: plain sampling, recorded as 1
    _, f = generate(model_dir, tmp_path / "f", *args, "--seed", "11", "--temperature", "1")
    assert f["outputs"] == a["outputs"]
    _, d = generate(model_dir, tmp_path / "d", *args, "--temperature", "0", "--seed", "1")
    _, e = generate(model_dir, tmp_path / "e", *args, "--temperature", "0", "--seed", "2")
    rows = np.array(d["outputs"]["vector"][0]["values"])
    assert d["outputs"] == e["outputs"] and np.allclose(rows, rows[0])  # the posterior mean, n times


def test_temperature_other_than_0_or_1_needs_a_conditional_prior(model_dir, tmp_path):
    result, _ = generate(model_dir, tmp_path, "--from", "text", "a red circle", "--temperature", "0.5")
    assert result.exit_code != 0 and "conditional prior" in said(result)


def test_to_takes_a_comma_list_and_a_swallowed_name_is_refused(model_dir, tmp_path):
    result, summary = generate(model_dir, tmp_path / "a", "--from", "text", "a red circle", "--to", "image,label")
    assert result.exit_code == 0, result.output
    assert set(summary["outputs"]) == {"image", "label"} and summary["inputs"] == ["a red circle"]
    result, _ = generate(model_dir, tmp_path / "b", "--from", "text", "--to", "image", "label", "a red circle")
    assert result.exit_code == 2 and "--to image,label" in said(result)
    assert not (tmp_path / "b" / "outputs.json").exists()


def test_no_from_samples_every_modality_jointly(model_dir, tmp_path):
    result, summary = generate(model_dir, tmp_path, "--n", "3", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert set(summary["outputs"]) == set(NAMES) and summary["from"] is None
    assert len(summary["outputs"]["text"][0]["values"]) == 3
    result, _ = generate(model_dir, tmp_path / "x", "a red circle")
    assert result.exit_code != 0 and "--from" in said(result)


def test_vector_inputs_from_the_command_line(model_dir, tmp_path):
    np.save(tmp_path / "v.npy", np.ones(4, dtype=np.float32))
    result, summary = generate(model_dir, tmp_path / "o", "--from", "vector", "0.1,0.2,0.3,0.4",
                               str(tmp_path / "v.npy"), "--to", "label")
    assert result.exit_code == 0, result.output
    assert len(summary["outputs"]["label"]) == 2
    result, _ = generate(model_dir, tmp_path / "p", "--from", "vector", "1,x,3,4")
    assert result.exit_code != 0 and "'x'" in said(result)
