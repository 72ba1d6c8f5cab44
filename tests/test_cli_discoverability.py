"""Finding your way: `omnivae models`, near-miss suggestions, and bare verbs that say what they need."""
import pytest
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.errors import ConfigError, did_you_mean
from omnivae.models import MODELS, model_config_from_dict

runner = CliRunner()


def test_every_model_is_listed_with_a_reference():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name, cls in MODELS.items():
        assert name in result.output
        assert cls.about and cls.paper, name  # every model says what it is and where it comes from
        assert cls.paper.split(",")[0] in result.output


def test_one_model_lists_its_own_options_with_defaults():
    result = runner.invoke(app, ["models", "mmvae_plus"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "private_dim" in result.output and "latent_dim" in result.output
    default = MODELS["mmvae_plus"].config_class.model_fields["private_dim"].default
    assert any("private_dim" in line and str(default) in line for line in result.output.splitlines())
    assert "prior_expert" not in result.output  # MoPoE's option, not this model's


def test_unknown_model_suggests_the_near_miss():
    result = runner.invoke(app, ["models", "mopo"])
    assert result.exit_code == 2
    assert "did you mean 'mopoe'" in result.output
    with pytest.raises(ConfigError, match="did you mean 'mmvae_plus'"):
        model_config_from_dict({"model": "mmvae_pluss"})


@pytest.mark.parametrize("word, expected", [("mvea", " (did you mean 'mvae'?)"), ("zzzz", ""), (3, "")])
def test_did_you_mean(word, expected):
    assert did_you_mean(word, ["mvae", "mopoe"]) == expected


def test_bare_train_asks_for_data_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2
    assert "--config" in result.output and "--data" in result.output
    assert list(tmp_path.iterdir()) == []  # no runs/train folder started


def test_training_output_has_no_lightning_chatter(tmp_path, capfd):
    config = tmp_path / "tiny.yaml"
    config.write_text("data: {source: shapes, options: {n: 120, level: easy}}\n"
                      "model: {model: mopoe, latent_dim: 4, conditional_prior: null}\n"
                      "train: {max_epochs: 1, progress: false, tensorboard: false}\n")
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    said = result.output + "".join(capfd.readouterr())
    assert result.exit_code == 0, said
    assert "trained mopoe" in said
    for noise in ("GPU available", "TPU available", "Tip:", "LeafSpec", "transfer_batch_to_device"):
        assert noise not in said, noise


def said(result) -> str:
    return " ".join(result.output.split())


@pytest.mark.parametrize("config, expected", [
    ({"train": {"max_epoch": 3}}, "train.max_epoch: unknown key (did you mean 'max_epochs'?)"),
    ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
    ({"data": {"sorce": "shapes"}}, "data.sorce: unknown key (did you mean 'source'?)"),
])
def test_unknown_config_keys_suggest_the_near_miss(config, expected):
    from omnivae.run import RunConfig

    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(config)
    assert expected in str(err.value)


def test_unknown_kinds_and_sources_suggest_the_near_miss():
    from omnivae.data.sources import DataConfig, load_source
    from omnivae.modalities import parse_spec

    with pytest.raises(ConfigError, match="did you mean 'image'"):
        parse_spec("x", {"kind": "imag"})
    with pytest.raises(ConfigError, match="did you mean 'shapes'"):
        load_source(DataConfig(source="shape"))


def test_set_has_one_meaning_on_every_verb(tmp_path):
    # a dotted run-config key everywhere: data inspect takes data.options.n like train does
    result = runner.invoke(app, ["data", "inspect", "--source", "shapes", "--set", "data.options.n=12"])
    assert result.exit_code == 0 and "12 examples" in result.output
    result = runner.invoke(app, ["data", "inspect", "--source", "shapes", "--set", "n=12"])
    assert result.exit_code == 2 and "data.options.n=12" in said(result)
    result = runner.invoke(app, ["train", "--data", "shapes", "--out", str(tmp_path / "r"),
                                 "--set", "trian.max_epochs=1"])
    assert result.exit_code == 2 and "did you mean 'train'" in said(result)
    assert not (tmp_path / "r").exists()
    result = runner.invoke(app, ["train", "--data", "shapes", "--out", str(tmp_path / "r"),
                                 "--set", "train.max_epoch=1"])
    assert result.exit_code == 2 and "did you mean 'max_epochs'" in said(result)
    assert not (tmp_path / "r").exists()


def test_data_hints_are_spelled_for_the_command_line_and_work(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(12):
            Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "odd": i if i % 2 else f"x{i}"}) + "\n")
    base = ["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--set", "train.max_steps=1",
            "--set", "train.progress=false"]
    result = runner.invoke(app, base)
    hint = "--set data.options.kinds.odd=text"
    assert result.exit_code == 2 and hint in said(result), said(result)
    result = runner.invoke(app, [*base, "--set", "data.options.kinds.odd=ignore"])  # the hint, as given
    assert result.exit_code == 0, said(result)
