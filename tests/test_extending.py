"""docs/extending.md, done for real: examples/custom_kind_and_model.py adds a modality kind
(an angle) and a model (mean of experts), each one class plus one registration. The new model
passes the shared model contract, the new kind is read, trained, generated, served by the CLI
and saved like the built-in ones."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import test_model_suite as suite
from test_model_suite import batch_for, make  # noqa: F401 (fixtures of the contract suite)
from typer.testing import CliRunner

from omnivae.modalities import MODALITY_KINDS
from omnivae.models import MODELS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_kind_and_model.py"


@pytest.fixture(scope="module")
def example():
    """The example module, imported (which registers its kind and model); unregistered afterwards."""
    spec = importlib.util.spec_from_file_location("custom_kind_and_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    MODALITY_KINDS.pop("angle", None)
    MODELS.pop("mean_of_experts", None)


def test_registration_is_all_it_takes(example):
    assert MODALITY_KINDS["angle"] is example.AngleModality
    assert MODELS["mean_of_experts"] is example.MeanOfExperts


CONTRACT = [suite.test_builds_from_a_dict_and_its_config_round_trips,
            suite.test_loss_is_a_finite_scalar_with_detached_terms,
            suite.test_gradients_reach_every_network_and_the_loss_falls_on_a_tiny_batch,
            suite.test_missing_entries_give_a_finite_loss_independent_of_their_placeholders,
            suite.test_all_true_mask_equals_no_mask, suite.test_an_example_with_nothing_present_adds_nothing,
            suite.test_encode_generate_sample_reconstruct, suite.test_save_load_round_trip_is_bit_for_bit]


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__.removeprefix("test_"))
def test_the_new_model_keeps_the_model_contract(example, check, make, batch_for, make_tensors, tmp_path):
    args = {"make": make, "batch_for": batch_for, "make_tensors": make_tensors, "tmp_path": tmp_path,
            "name": "mean_of_experts", "options": {}, "names": None}
    params = check.__code__.co_varnames[:check.__code__.co_argcount]
    check(**{p: args[p] for p in params})


def test_the_new_kind_and_model_train_generate_and_load(example, tmp_path, capsys):
    example.main(quick=False, out=tmp_path)  # 3,000 examples, 15 epochs: about 10 s here
    printed = capsys.readouterr().out
    degrees = json.loads(printed.split("from each quadrant:")[1].strip())
    # quadrant q covers [-180 + 90 q, -90 + 90 q): its middle is -135 + 90 q
    assert all(abs(d - (-135 + 90 * q)) < 30 for q, d in enumerate(degrees)), degrees

    from omnivae.cli import app
    out = tmp_path / "gen"
    result = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "run" / "model"), "--from", "wind",
                                      "--to", "quadrant", "--temperature", "0", "--out", str(out), "--", "135", "-45"])
    assert result.exit_code == 0, result.output
    entries = json.loads((out / "outputs.json").read_text())["outputs"]["quadrant"]
    assert [e["values"] for e in entries] == [[3], [1]]  # 135 degrees lies in the last quadrant, -45 in the second
    result = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "run" / "model"), "--from", "quadrant",
                                      "1", "--to", "wind", "--n", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "outputs.json").read_text())["outputs"]["wind"][0]
    assert np.load(out / entry["file"]).shape == (3,)  # the default writer of a numeric kind: one .npy


def test_a_bad_value_of_the_new_kind_gets_its_own_message(example, tmp_path):
    model = example.MeanOfExperts(example.MeanOfExpertsConfig(
        latent_dim=2, modalities={"wind": {"kind": "angle"}, "vane": {"kind": "vector", "dim": 2}}))
    with pytest.raises(Exception, match="wind.*angles of shape"):
        model.encode({"wind": [[0.1, 0.2]], "vane": [[1.0, 0.0]]})
    with pytest.raises(Exception, match="angles in degrees"):
        model.modalities["wind"].read_cli(["north"])
