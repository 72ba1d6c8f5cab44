"""The command line: help, train from a YAML config, resume, generate, and clear errors."""
import json

import pytest
import yaml
from typer.testing import CliRunner

from omnivae.cli import app

runner = CliRunner()

TINY = {
    "data": {"source": "shapes", "options": {"n": 240, "level": "easy", "image_size": 16}, "test_fraction": 0.1},
    "model": {"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [32]}, "text": {"hidden": 16, "embed_dim": 8, "max_len": 6}}},
    "train": {"max_epochs": 1, "batch_size": 32, "progress": False, "tensorboard": False},
}


def write_config(tmp_path, config=TINY):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_help_lists_the_verbs():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("demo", "train", "generate"):
        assert verb in result.output


def test_train_then_generate_then_resume(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model" / "tokenizer_text.json").is_file()

    gen_dir = tmp_path / "gen"
    result = runner.invoke(app, ["generate", "--model", str(out / "model"), "--from", "text",
                                 "a red circle", "a blue square", "--to", "image", "--n", "2", "--out", str(gen_dir)])
    assert result.exit_code == 0, result.output
    outputs = json.loads((gen_dir / "outputs.json").read_text())
    assert len(outputs["outputs"]["image"]) == 2
    assert all((gen_dir / f).is_file() for entry in outputs["outputs"]["image"] for f in entry["files"])

    result = runner.invoke(app, ["generate", "--model", str(out / "model"), "--from", "text", "a red circle",
                                 "--to", "text", "--out", str(gen_dir)])
    assert result.exit_code == 0, result.output
    assert "text" in json.loads((gen_dir / "outputs.json").read_text())["outputs"]

    run_cfg = yaml.safe_load((out / "run.yaml").read_text())
    run_cfg["train"]["max_epochs"] = 2
    (out / "run.yaml").write_text(yaml.safe_dump(run_cfg))
    result = runner.invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    epochs = [r for r in (out / "logs" / "metrics.csv").read_text().splitlines()[1:] if r]
    assert epochs, "the resumed attempt logged nothing"
    assert list((out / "logs").glob("metrics.part-*.csv")), "the first attempt's metrics were not kept"


def test_existing_run_folder_is_not_touched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path)), "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists" in " ".join(result.output.split())
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("mutate, words", [
    (lambda c: c["train"].update(max_epoch=3), ["max_epoch", "unknown key"]),
    (lambda c: c["model"].update(model="nope"), ["unknown model", "nope"]),
    (lambda c: c["model"]["modalities"].update(audio={}), ["audio"]),
    (lambda c: c["data"].update(source="nowhere"), ["unknown data source", "nowhere"]),
])
def test_bad_config_gets_a_clear_error(tmp_path, mutate, words):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    mutate(config)
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path, config)), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for word in words:
        assert word in text


def test_generate_errors_name_the_problem(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", "--config", str(write_config(tmp_path)), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["generate", "--model", str(out / "model"), "--from", "audio", "hello"])
    assert result.exit_code == 2 and "audio" in result.output
    result = runner.invoke(app, ["generate", "--model", str(out / "model"), "--from", "text", "   "])
    assert result.exit_code == 2
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "missing"), "--from", "text", "a red circle"])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())
