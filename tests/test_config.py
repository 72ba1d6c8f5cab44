"""Strict configuration models and config files."""
from __future__ import annotations

import pytest

from omnivae import ConfigError
from omnivae.config import StrictModel, read_config_file
from omnivae.run import RunConfig
from omnivae.train.config import TrainConfig


class Inner(StrictModel):
    depth: int = 2


class Outer(StrictModel):
    name: str
    rate: float = 0.5
    inner: Inner = Inner()


def test_valid_config_and_round_trip():
    cfg = Outer.from_dict({"name": "a", "inner": {"depth": 3}})
    assert cfg.inner.depth == 3 and cfg.rate == 0.5
    assert Outer.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == {"name": "a", "rate": 0.5, "inner": {"depth": 3}}


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"name": "a", "rat": 0.1}, where="my settings")
    message = str(info.value)
    assert message.startswith("invalid my settings")
    assert "rat: unknown key" in message and "0.1" in message


def test_nested_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"inner\.deep: unknown key"):
        Outer.from_dict({"name": "a", "inner": {"deep": 1}})


def test_wrong_type_and_missing_key_are_named():
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"rate": "fast"})
    message = str(info.value)
    assert "name:" in message and "rate:" in message and "'fast'" in message


def test_assignment_is_validated():
    cfg = Outer.from_dict({"name": "a"})
    with pytest.raises(ValueError):
        cfg.rate = "fast"


def test_train_and_run_configs_reject_unknown_keys():
    with pytest.raises(ConfigError, match="max_epoch: unknown key"):
        TrainConfig.from_dict({"max_epoch": 3})
    with pytest.raises(ConfigError, match=r"train\.bacth_size: unknown key"):
        RunConfig.from_dict({"train": {"bacth_size": 3}})
    with pytest.raises(ConfigError, match=r"on_nonfinite"):
        TrainConfig.from_dict({"on_nonfinite": "ignore"})
    assert RunConfig.from_dict({}).train.max_epochs == TrainConfig().max_epochs


def test_read_config_file_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  max_epochs: 3\nmodel: {model: mvae}\n")
    assert read_config_file(tmp_path / "a.yaml") == {"train": {"max_epochs": 3}, "model": {"model": "mvae"}}
    (tmp_path / "b.json").write_text('{"train": {"lr": 0.01}}')
    assert read_config_file(str(tmp_path / "b.json")) == {"train": {"lr": 0.01}}


def test_read_config_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path)  # a folder is not a config file


@pytest.mark.parametrize("name, text", [("bad.yaml", "train: [1, 2\n"), ("bad.yml", "a: b: c\n"),
                                        ("bad.json", '{"train": }')])
def test_read_config_file_invalid_syntax(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match="not valid"):
        read_config_file(tmp_path / name)


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("42\n", "int"), ("", "NoneType"),
                                        ("just words\n", "str")])
def test_read_config_file_non_mapping(tmp_path, text, kind):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=f"mapping.*{kind}"):
        read_config_file(tmp_path / "c.yaml")


def test_read_config_file_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "evil.yaml").write_text(f"!!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with pytest.raises(ConfigError, match="not valid"):
        read_config_file(tmp_path / "evil.yaml")
    assert not marker.exists()


# -- model and modality configs from damaged files (finding F6) --------------------------------------------
BASE = {"model": "mvae", "latent_dim": 2, "modalities": {
    "img": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp", "hidden": [4]},
    "lab": {"kind": "categorical", "num_classes": 3, "hidden": [4]}}}


@pytest.mark.parametrize("path, value, words", [
    (("model",), [], ["unknown model []"]),
    (("model",), {}, ["unknown model {}"]),
    (("modalities", "lab", "kind"), [], ["'lab'", "unknown kind []"]),
    (("modalities", "img", "scale"), 0, ["scale", "greater than 0"]),
    (("modalities", "img", "scale"), float("nan"), ["scale", "finite"]),
    (("modalities", "img", "weight"), -1, ["weight", "greater than or equal to 0"]),
    (("modalities", "img", "shape"), [-3, 8, 8], ["shape.0", "-3"]),
    (("modalities", "img", "hidden"), [0], ["hidden.0", "0"]),
    (("modalities", "img", "channels"), [], ["channels", "at least 1"]),
    (("modalities", "lab", "hidden"), [4, -2], ["hidden.1", "-2"]),
])
def test_bad_values_in_a_model_config_are_config_errors_naming_the_key(path, value, words):
    import copy

    from omnivae.models import build_model

    config = copy.deepcopy(BASE)
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        build_model(config)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_vector_and_signal_sizes_are_checked():
    from omnivae.modalities import parse_spec

    with pytest.raises(ConfigError, match="dim"):
        parse_spec("v", {"kind": "vector", "dim": 0})
    with pytest.raises(ConfigError, match=r"shape\.1"):
        parse_spec("s", {"kind": "signal", "shape": [1, -4]})
    with pytest.raises(ConfigError, match="max_vocab"):
        parse_spec("t", {"kind": "text", "max_vocab": -1})
