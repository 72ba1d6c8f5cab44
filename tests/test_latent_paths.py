"""Latent-space paths (omnivae.tasks.latent): slerp and linear interpolation, traversals, the most
active dimensions, the `interpolate` and `traverse` verbs, and the report section."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.data.raw import RawData
from omnivae.errors import InputError
from omnivae.io import save_model
from omnivae.models import build_model
from omnivae.report.latent_paths import latent_paths_section
from omnivae.tasks import latent

runner = CliRunner()
CAPTIONS = ("a red circle", "a blue square", "a green circle")


def with_text(raw):
    raw.modalities["text"] = [CAPTIONS[y] for y in raw.modalities["label"]]
    raw.kinds["text"] = "text"
    raw.mask["text"] = np.ones(len(raw), dtype=bool)
    return raw


@pytest.fixture(scope="module")
def raw(make_raw):
    return with_text(make_raw(24, names=("image", "label")))


@pytest.fixture(scope="module")
def model(raw, tiny_config):
    config = tiny_config("mopoe", names=("image", "label"))
    config["modalities"]["text"] = {"kind": "text", "hidden": 16, "embed_dim": 8, "max_len": 6}
    torch.manual_seed(0)
    return build_model(config, raw).eval()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "model"
    save_model(model, folder)
    return folder


def test_slerp_keeps_the_norm_and_meets_both_ends():
    a = torch.tensor([3.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 3.0 * 0.6, 3.0 * 0.8])
    t, codes = latent.path_codes(a, b, 9, "spherical")
    assert torch.equal(codes[0], a) and torch.equal(codes[-1], b)
    assert torch.allclose(codes.norm(dim=1), torch.full((9,), 3.0), atol=1e-5)
    middle = latent.path_codes(a, b, 9, "linear")[1][4]
    assert middle.norm() < 3.0 - 0.5  # the straight line cuts through the middle
    assert t.tolist() == pytest.approx(np.linspace(0, 1, 9))


def test_auto_path_is_linear_for_deterministic_models(make_raw, tiny_config, model):
    ae = build_model(tiny_config("ae", names=("image",)), make_raw(8, names=("image",)))
    assert ae.deterministic_codes and latent.resolve_path(ae, "auto") == "linear"
    assert not model.deterministic_codes and latent.resolve_path(model, "auto") == "spherical"
    images = make_raw(2, names=("image",)).modalities["image"]
    found = latent.interpolate(ae, images[0], images[1], "image", steps=5)
    assert found.path == "linear"
    step = found.codes[1:] - found.codes[:-1]
    assert torch.allclose(step, step[0].expand_as(step), atol=1e-5)  # equal steps on a line


def test_path_ends_decode_the_inputs_codes(model):
    a, b = "a red circle", "a blue square"
    found = latent.interpolate(model, a, b, "text", target="image", steps=6)
    assert found.path == "spherical" and found.outputs.shape == (6, 1, 8, 8)
    code = latent.codes_of(model, {"text": [a, b]})
    ends = model.decode_full_code(code, ["image"])["image"]
    assert torch.allclose(found.outputs[0], ends[0]) and torch.allclose(found.outputs[-1], ends[1])
    captions = latent.interpolate(model, a, b, "text", target="text", steps=4, path="linear").outputs
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    for bad in ({"steps": 1}, {"path": "curved"}, {"target": "sound"}):
        with pytest.raises(InputError):
            latent.interpolate(model, a, b, "text", **bad)


def test_traversal_changes_only_the_chosen_dimension(model):
    start = {"text": ["a red circle"]}
    found = latent.traverse(model, 2, target="image", inputs=start, low=-2, high=2, steps=5)
    base = latent.codes_of(model, start)[0]
    assert found.t == pytest.approx([-2, -1, 0, 1, 2]) and found.dim == 2
    others = [d for d in range(model.full_code_dim()) if d != 2]
    assert torch.allclose(found.codes[:, others], base[others].expand(5, -1))
    assert found.codes[:, 2].tolist() == pytest.approx([-2, -1, 0, 1, 2])
    prior = latent.traverse(model, 0, steps=3)  # from the prior mean
    assert torch.count_nonzero(prior.codes[:, 1:]) == 0 and prior.target == "image"
    rows = latent.traverse_grid(model, [0, 3], steps=3)
    assert [r.dim for r in rows] == [0, 3]
    with pytest.raises(InputError, match="dimensions"):
        latent.traverse(model, 99)
    with pytest.raises(InputError, match="one input"):
        latent.traverse(model, 0, inputs={"text": ["a", "b"]})


class Fixed(torch.nn.Module):
    """Stands in for a model: codes vary over the data in dimension 2 only."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base, name)

    def full_code(self, mu, logvar, present):
        code = torch.zeros(mu.shape[1], 4)
        code[:, 2] = torch.arange(mu.shape[1], dtype=torch.float32)
        code[:, 0] = 0.5
        return code


def test_active_dims_pick_what_varies(model, raw):
    assert latent.active_dims(Fixed(model), raw, 1) == [2]
    picked = latent.active_dims(model, raw, 3)
    assert len(picked) == 3 and len(set(picked)) == 3
    rows = latent.traverse_grid(Fixed(model), data=raw, k=1, steps=3)
    assert [r.dim for r in rows] == [2]


def run(*args):
    result = runner.invoke(app, list(map(str, args)))
    return result, " ".join(result.output.split())


def test_interpolate_verb_writes_its_files(model_dir, tmp_path):
    out = tmp_path / "interp"
    result, said = run("interpolate", "--model", model_dir, "--from", "text", "a red circle", "a blue square",
                       "--to", "image", "--steps", 5, "--out", out)
    assert result.exit_code == 0, said
    summary = json.loads((out / "outputs.json").read_text())
    assert summary["path"] == "spherical" and summary["t"] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert len(summary["outputs"]["files"]) == 5 and (out / summary["figure"]).is_file()
    with Image.open(out / summary["outputs"]["files"][0]) as img:
        assert img.size == (8, 8)
    text = tmp_path / "captions"
    result, said = run("interpolate", "--model", model_dir, "--from", "text", "a red circle", "a blue square",
                       "--to", "text", "--path", "linear", "--out", text)
    assert result.exit_code == 0, said
    assert len(json.loads((text / "outputs.json").read_text())["outputs"]["values"]) == 8


def test_traverse_verb_writes_its_files(model_dir, raw, tmp_path):
    out = tmp_path / "trav"
    result, said = run("traverse", "--model", model_dir, "--from", "text", "a red circle", "--to", "image",
                       "--dims", "0,3", "--low", "-2", "--high", "2", "--steps", 3, "--out", out)
    assert result.exit_code == 0, said
    summary = json.loads((out / "outputs.json").read_text())
    assert summary["dims"] == [0, 3] and summary["values"] == pytest.approx([-2, 0, 2])
    assert [len(r["files"]) for r in summary["rows"]] == [3, 3] and (out / "traversals.png").is_file()
    data = tmp_path / "data.npz"
    np.savez(data, image=raw.modalities["image"], label=raw.modalities["label"])
    active = tmp_path / "active"
    result, said = run("traverse", "--model", model_dir, "--data", data, "--steps", 3, "--out", active)
    assert result.exit_code == 0, said
    summary = json.loads((active / "outputs.json").read_text())
    assert summary["chosen_by"] == "most active on the data" and len(summary["dims"]) == 4  # latent_dim 4


@pytest.mark.parametrize("args, message", [
    (["interpolate", "--from", "sound", "a", "b"], "unknown modality"),
    (["interpolate", "--from", "text", "a red circle", "a blue square", "--steps", "1"], "steps"),
    (["interpolate", "--from", "text", "a red circle"], "two inputs"),
    (["interpolate", "--from", "text", "a", "b", "--path", "curved"], "--path"),
    (["traverse", "--to", "sound"], "unknown modality"),
    (["traverse", "--steps", "1"], "steps"),
    (["traverse", "--dims", "0,x"], "--dims"),
    (["traverse", "--dims", "9"], "dimensions"),
    (["traverse", "--from", "text", "a", "b"], "one input"),
])
def test_verbs_refuse_bad_input(model_dir, tmp_path, args, message):
    out = tmp_path / "out"
    result, said = run(*args, "--model", model_dir, "--out", out)
    assert result.exit_code == 2 and message in said and "Traceback" not in said, said
    assert not out.exists()


def test_verbs_refuse_an_out_that_is_a_file(model_dir, tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    for verb in (["interpolate", "--from", "text", "a", "b"], ["traverse"]):
        result, said = run(*verb, "--model", model_dir, "--out", file)
        assert result.exit_code == 2 and "is a file" in said, said
    assert file.read_text() == "keep me"


def test_report_section_has_its_figures(model, raw, tmp_path):
    section = latent_paths_section(model, raw, tmp_path, k=3)
    assert section.title == "Latent space paths" and "spherical" in section.text
    assert [p.name for p in section.images] == ["interpolation.png", "traversals.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in section.images)
    captions = latent_paths_section(model, raw, tmp_path / "text", target="text", k=2)
    assert all(p.is_file() for p in captions.images)
