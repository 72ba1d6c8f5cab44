"""Likelihood rescaling between modalities: unset weights come from the data dimensions
(max_n dim_n / dim_m), explicit weights win, the chosen numbers are saved with the model and
the objective uses them."""
from __future__ import annotations

import json

import pytest
import torch

import omnivae
from omnivae import build_model
from omnivae.batch import Batch

pytestmark = pytest.mark.usefixtures("one_thread")


def config(tiny_config, **options):
    return tiny_config("mvae", ("image", "label"), **options)


def test_unset_weights_follow_the_data_dimensions(tiny_config, make_raw):
    model = build_model(config(tiny_config), make_raw(32))
    # image 1x8x8 = 64 values, a label 1: the label's log-likelihood counts 64 times
    assert model.likelihood_weights() == {"image": 1.0, "label": 64.0}
    assert model.config.modalities["label"].weight == 64.0


def test_text_is_weighted_by_its_token_positions(make_raw):
    from omnivae.data.shapes import make_shapes

    raw = make_shapes(64, "easy")
    model = build_model({"model": "mopoe", "modalities": {"image": {"kind": "image", "shape": [3, 32, 32]},
                                                          "text": {"kind": "text", "max_len": 12}}}, raw)
    assert model.likelihood_weights() == {"image": 1.0, "text": 3 * 32 * 32 / 12}


def test_explicit_weight_and_rescale_none_are_kept(tiny_config, make_raw):
    cfg = config(tiny_config)
    cfg["modalities"]["label"]["weight"] = 5.0
    assert build_model(cfg, make_raw(32)).likelihood_weights() == {"image": 1.0, "label": 5.0}
    none = build_model(config(tiny_config, rescale="none"), make_raw(32))
    assert none.likelihood_weights() == {"image": 1.0, "label": 1.0}


def test_the_chosen_weights_are_saved_and_reloaded(tiny_config, make_raw, tmp_path):
    model = build_model(config(tiny_config), make_raw(32))
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    specs = saved["config"]["modalities"] if "config" in saved else saved["modalities"]
    assert specs["label"]["weight"] == 64.0 and specs["image"]["weight"] == 1.0
    again = omnivae.load(tmp_path / "m")
    assert again.likelihood_weights() == model.likelihood_weights()


def test_the_objective_uses_the_weights(tiny_config, make_raw, make_tensors):
    torch.manual_seed(0)
    scaled = build_model(config(tiny_config), make_raw(32))
    plain = build_model(config(tiny_config, rescale="none"), make_raw(32))
    plain.load_state_dict(scaled.state_dict())
    t = make_tensors(8)
    batch = Batch({"image": t["image"], "label": t["label"]}, {})
    z = torch.randn(1, 8, 4)
    a, b = scaled.log_likelihoods(z, batch), plain.log_likelihoods(z, batch)
    torch.testing.assert_close(a["label"], 64.0 * b["label"])
    torch.testing.assert_close(a["image"], b["image"])


def test_a_bad_rescale_value_is_a_config_error(tiny_config, make_raw):
    with pytest.raises(omnivae.ConfigError, match="rescale"):
        build_model(config(tiny_config, rescale="sometimes"), make_raw(32))
