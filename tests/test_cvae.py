"""CVAE: config defaults written out and config errors; the objective against its formula;
the target is generated from its conditions only, and the conditions' embedding matters
(the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import Batch, ConfigError, InputError
from omnivae.models.cvae import CVAE

from helpers.models import at_seed, batch_of, build, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT = 4


def make(tiny_config, names=("image", "label"), **options):
    return build(tiny_config, "cvae", names, **options)


def test_cvae_config_defaults_are_written_out(tiny_config):
    cfg = make(tiny_config).config
    assert (cfg.target, cfg.conditions, cfg.condition_dim) == ("image", ["label"], LATENT)
    saved = cfg.to_dict()
    assert saved["target"] == "image" and saved["conditions"] == ["label"] and saved["condition_dim"] == LATENT
    three = make(tiny_config, ("image", "label", "vector"), target="label", condition_dim=2)
    assert three.config.conditions == ["image", "vector"]
    assert CVAE.modality_latent_dim(three.config) == LATENT + 2


@pytest.mark.parametrize("options, message", [
    ({"target": "audio"}, "target 'audio' is not a modality"),
    ({"target": "image", "conditions": ["sound"]}, "not modalities of this model"),
    ({"target": "image", "conditions": ["image", "label"]}, "cannot also be a condition"),
    ({"target": "image", "conditions": []}, "at least one modality"),
    ({"condition_dim": 0}, "condition_dim"),
])
def test_cvae_config_errors(tiny_config, options, message):
    with pytest.raises(ConfigError, match=message):
        make(tiny_config, **options)


def test_cvae_objective_matches_formula(tiny_config, make_tensors):
    model = make(tiny_config, beta=1.5)
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch, seed=6)
    mu, logvar, _ = model.encode_unimodal(batch)
    c = mu[1, :, LATENT:]  # the one condition's embedding half
    h = model.posterior_net(torch.cat([mu[0], logvar[0], c], -1))
    q_mu, q_logvar = h.chunk(2, -1)
    torch.manual_seed(6)
    z = q_mu + torch.randn(1, *q_mu.shape) * torch.exp(0.5 * q_logvar)
    rec = model.modalities["image"].log_likelihood(torch.cat([z, c[None]], -1), batch.data["image"])[0]
    kl = kl_divergence(normal(q_mu, q_logvar), Normal(0.0, 1.0)).sum(-1)
    assert out.total.item() == pytest.approx(-(rec - 1.5 * kl).mean().item(), rel=1e-5)


def test_cvae_user_api(tiny_config, make_tensors):
    model = make(tiny_config).eval()
    x = pick(make_tensors(16), model.names, 5)
    assert torch.equal(model.encode(x, given=["label"]), torch.zeros(5, LATENT))  # no target: prior mean
    mean = model.generate(x, given=["label"], n=2, mean=True, raw=True)["image"]
    other = {"label": (x["label"] + 1) % 3}
    assert not torch.allclose(mean[0], model.generate(other, mean=True, raw=True)["image"])  # c matters


def test_cvae_generation_errors(tiny_config, make_tensors):
    model = make(tiny_config).eval()
    x = pick(make_tensors(16), model.names, 5)
    with pytest.raises(InputError, match=r"misses \['label'\]"):
        model.generate(x, given=["image"], targets=["image"])
    with pytest.raises(InputError, match=r"misses \['label'\]"):
        model.generate({"image": x["image"]})
    with pytest.raises(InputError, match="only generates its target 'image'"):
        model.generate(x, given=["label"], targets=["label"])
    with pytest.raises(InputError, match="no unconditional samples"):
        model.sample(3)
    with pytest.raises(InputError, match="condition embedding"):
        model.decode(torch.randn(5, LATENT))
    with pytest.raises(InputError, match="needs its target"):
        model.loss(Batch({"label": x["label"]}))


def test_cvae_with_two_conditions_and_detached_embedding(tiny_config, make_tensors):
    names = ("image", "label", "vector")
    model = make(tiny_config, names, detach_condition=True)
    data = make_tensors(8)
    out = at_seed(model, batch_of(model, data, {"vector": torch.tensor([True, False] * 4)}))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.modalities["label"].encoder.parameters())  # c detached
    assert model.modalities["image"].encoder[1][0].weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match=r"misses \['vector'\]"):
        model.eval().generate(pick(data, names, 3), given=["label"])


def test_training_asks_cvae_about_its_target_and_its_decoder_inputs(tiny_config, make_tensors):
    """An adversarial term may only train the target's decoder, which reads [z, c]."""
    model = make(tiny_config, target="label", conditions=["image"])
    assert model.adversarial_problem("label") is None
    assert "only generates its target 'label'" in model.adversarial_problem("image")
    mu, logvar, present = model.encode_unimodal(batch_of(model, make_tensors(4)))
    z = torch.randn(4, LATENT)
    codes = model.decoder_codes("label", z, mu, logvar, present, from_prior=True)
    torch.testing.assert_close(codes, torch.cat([z, model.condition_embedding(mu, logvar, present)], -1))
