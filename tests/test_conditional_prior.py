"""The conditional flow prior p(code | given modalities): learns a conditional law with
several modes, becomes generate's default path once fitted, saves and reloads with the model,
and refuses what it cannot do."""
from __future__ import annotations

import pytest
import torch

import omnivae
from omnivae import ConfigError, InputError, build_model
from omnivae.priors import conditional
from omnivae.priors.conditional import (ConditionalFlowPrior, ConditionalPriorConfig, default_steps,
                                        fit_conditional_prior)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flow_learns_a_two_mode_conditional_law():
    """Context bit 1 -> code near +2 or -2 (the caption leaves the sign open); bit 0 -> near 0.
    Draws must fall in both modes, not in the middle where their average lies."""
    gen = torch.Generator().manual_seed(0)
    n = 2000
    present = torch.ones(1, n, dtype=torch.bool)
    bit = (torch.rand(n, generator=gen) < 0.5).float()
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    code = (bit * sign * 2.0).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=gen)
    mu = bit.view(1, n, 1)  # one "modality" whose mean is the bit
    prior = ConditionalFlowPrior(1, 1, 1, ConditionalPriorConfig(steps=600, hidden=[32, 32], transforms=2,
                                                                 keep_probability=1.0))
    prior.fit(code, mu, present, seed=0)
    torch.manual_seed(1)
    one = prior.sample(prior.context(torch.ones(1, 1, 1), torch.ones(1, 1, dtype=torch.bool)), 400)[:, 0, 0]
    zero = prior.sample(prior.context(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool)), 400)[:, 0, 0]
    assert (one > 1.0).float().mean() > 0.3 and (one < -1.0).float().mean() > 0.3
    assert (one.abs() < 0.8).float().mean() < 0.15  # hardly any at the average of the two modes
    assert zero.abs().median() < 0.5


@pytest.fixture
def fitted(tiny_config, make_raw):
    torch.manual_seed(0)
    raw = make_raw(64, names=("image", "label"))
    cfg = tiny_config("mopoe", ("image", "label"), latent_dim=4,
                      conditional_prior={"steps": 40, "hidden": [16], "transforms": 2})
    model = build_model(cfg, raw).eval()
    fit_conditional_prior(model, raw, seed=0)
    return model, raw


def test_generate_draws_from_the_fitted_prior_by_default(fitted):
    model, raw = fitted
    batch = {"label": raw.modalities["label"][:5]}
    torch.manual_seed(3)
    default = model.generate(batch, given=["label"], targets=["image"], n=2, raw=True)["image"]
    torch.manual_seed(3)
    flow = model.generate(batch, given=["label"], targets=["image"], n=2, raw=True, sampler="conditional")["image"]
    torch.manual_seed(3)
    post = model.generate(batch, given=["label"], targets=["image"], n=2, raw=True, sampler="posterior")["image"]
    torch.testing.assert_close(default, flow)
    assert not torch.allclose(default, post)
    assert default.shape == (2, 5, 1, 8, 8)
    joint = model.sample(6, raw=True)
    assert joint["image"].shape == (6, 1, 8, 8) and joint["label"].shape == (6,)


def test_generation_uses_the_configured_temperature_unless_given_one(fitted):
    """latent_temperature None (generate's and sample's default) is conditional_prior.temperature
    (0.7 unless configured): the same draws as passing it, fewer spread than the fitted law (1)."""
    model, raw = fitted
    assert model.conditional_prior.config.temperature == 0.7
    batch = {"label": raw.modalities["label"][:5]}

    def codes(**options):
        torch.manual_seed(3)
        return model.generate(batch, given=["label"], targets=["image"], n=50, raw=True, **options)["image"]

    default, cool, law = codes(), codes(latent_temperature=0.7), codes(latent_temperature=1.0)
    torch.testing.assert_close(default, cool)
    assert not torch.allclose(default, law)
    assert default.var(0).mean() < law.var(0).mean()  # the decoded draws vary less at 0.7
    model.conditional_prior.config.temperature = 1.0
    torch.testing.assert_close(codes(), law)
    torch.manual_seed(4)
    joint = model.sample(8, raw=True)["image"]
    torch.manual_seed(4)
    torch.testing.assert_close(joint, model.sample(8, raw=True, latent_temperature=1.0)["image"])


def test_prior_weights_round_trip_through_a_saved_model(fitted, tmp_path):
    model, raw = fitted
    model.save(tmp_path / "m")
    again = omnivae.load(tmp_path / "m")
    assert again.conditional_prior.is_fitted
    batch = {"label": raw.modalities["label"][:4]}
    outs = []
    for m in (model, again):
        torch.manual_seed(7)
        outs.append(m.generate(batch, given=["label"], targets=["image"], raw=True)["image"])
    torch.testing.assert_close(outs[0], outs[1])


def test_the_prior_is_not_trained_by_the_model_objective(tiny_config, make_raw):
    raw = make_raw(32)
    model = build_model(tiny_config("mopoe", ("image", "label"), conditional_prior={}), raw)
    assert not any(p.requires_grad for p in model.conditional_prior.parameters())
    assert not model.conditional_prior.is_fitted


def test_unfitted_or_unknown_samplers_are_refused(tiny_config, make_raw):
    raw = make_raw(32)
    model = build_model(tiny_config("mopoe", ("image", "label"), conditional_prior={}), raw)
    batch = {"label": raw.modalities["label"][:2]}
    with pytest.raises(InputError, match="fitted conditional prior"):
        model.generate(batch, given=["label"], sampler="conditional")
    with pytest.raises(InputError, match="sampler"):
        model.generate(batch, given=["label"], sampler="flow")
    plain = model.generate(batch, given=["label"], targets=["image"], raw=True)  # auto: posterior until fitted
    assert plain["image"].shape == (2, 1, 8, 8)


def test_models_that_cannot_take_it_say_so(tiny_config, make_raw):
    raw = make_raw(32)
    cfg = tiny_config("cvae", ("image", "label"), target="image", conditions=["label"], conditional_prior={})
    with pytest.raises(ConfigError, match="conditional_prior"):
        build_model(cfg, raw)
    with pytest.raises(ConfigError, match="steps"):
        build_model(tiny_config("mopoe", ("image", "label"), conditional_prior={"steps": 0}), raw)


def test_mmvae_plus_prior_carries_the_private_codes(tiny_config, make_raw):
    torch.manual_seed(0)
    raw = make_raw(48)
    model = build_model(tiny_config("mmvae_plus", ("image", "label"), private_dim=2,
                                    conditional_prior={"steps": 20, "hidden": [16], "transforms": 1}), raw).eval()
    assert model.conditional_prior.code_dim == 4 + 2 * 2
    fit_conditional_prior(model, raw)
    out = model.generate({"label": raw.modalities["label"][:3]}, given=["label"], targets=["image"], raw=True)
    assert out["image"].shape == (3, 1, 8, 8)


def test_default_steps_follow_training_within_bounds():
    assert default_steps(48000, 128, training_steps=564) == 564  # a run: as many steps as it trained
    assert default_steps(48000, 128, training_steps=20) == 100
    assert default_steps(48000, 128, training_steps=90000) == 1500
    assert default_steps(1000, 128) == 469  # no step count: 60 passes over the codes
    assert default_steps(48000, 128) == 1500


def test_fit_runs_the_training_steps_unless_the_config_sets_them():
    n = 64
    code, mu, present = torch.randn(n, 2), torch.randn(1, n, 2), torch.ones(1, n, dtype=torch.bool)
    small = {"hidden": [8], "transforms": 1, "batch_size": 16}
    prior = ConditionalFlowPrior(2, 1, 2, ConditionalPriorConfig(**small))
    assert len(prior.fit(code, mu, present, log_every=1, training_steps=130)) == 130
    prior = ConditionalFlowPrior(2, 1, 2, ConditionalPriorConfig(steps=7, **small))
    assert len(prior.fit(code, mu, present, log_every=1, training_steps=130)) == 7


def test_a_run_fits_the_prior_for_as_many_steps_as_it_trained(tmp_path, monkeypatch):
    from omnivae.run import train_run

    seen = {}

    def record(model, data, seed=0, training_steps=None):
        seen["training_steps"] = training_steps

    monkeypatch.setattr(conditional, "fit_conditional_prior", record)
    config = {"data": {"source": "shapes", "options": {"n": 60, "level": "easy"}},
              "model": {"model": "mopoe", "latent_dim": 4,
                        "modalities": {"image": {"arch": "mlp", "hidden": [16]}, "text": {}}},
              "train": {"max_epochs": 2, "batch_size": 16, "progress": False, "tensorboard": False}}
    result = train_run(config, tmp_path / "run")
    assert result.model.config.conditional_prior is not None
    assert seen["training_steps"] == 6  # 2 epochs of ceil(48 / 16)


def test_classes_are_the_value_the_draws_agree_on(fitted):
    """A class (a kind that votes) generated from the conditional prior is Modality.agreed over
    `consensus` draws per output (default conditional_prior.consensus, 16); images are the first of
    those draws; consensus=1 decodes one draw, as images always are."""
    model, raw = fitted
    cp = model.conditional_prior
    assert cp.config.consensus == 16
    head = model.modalities["label"].decoder  # untrained: the same class for every code; a linear
    model.modalities["label"].decoder = torch.nn.Linear(4, head[-1].out_features)  # one varies with it
    batch = {"image": raw.modalities["image"][:6]}
    ctx = cp.context(*model.encode_unimodal(model.as_batch(batch), ["image"])[::2])

    def generated(**options):
        torch.manual_seed(5)
        return model.generate(batch, given=["image"], targets=["image", "label"], n=3, raw=True,
                              latent_temperature=3.0, **options)  # widely spread draws, which disagree

    def by_hand(k: int):
        torch.manual_seed(5)
        code = cp.sample(ctx, 3 * k, 3.0).unflatten(0, (k, 3))  # [k,n,B,T]
        label = model.modalities["label"].agreed(code.flatten(1, 2)).reshape(3, 6)
        return model.decode(code[0], ["image"], raw=True)["image"], label

    out, (image, label) = generated(), by_hand(16)
    assert out["label"].shape == (3, 6)
    torch.testing.assert_close(out["image"], image)
    assert torch.equal(out["label"], label)
    one = generated(consensus=1)
    torch.manual_seed(5)
    code = cp.sample(ctx, 3, 3.0)
    assert torch.equal(one["label"], model.decode(code, ["label"], raw=True)["label"])
    assert not torch.equal(one["label"], out["label"])  # else agreement could not be told from one draw
    assert torch.equal(generated(consensus=4)["label"], by_hand(4)[1])


def test_image_targets_draw_once_whatever_the_consensus(fitted):
    model, raw = fitted
    batch = {"label": raw.modalities["label"][:5]}
    outs = []
    for k in (1, 16):
        torch.manual_seed(2)
        outs.append(model.generate(batch, given=["label"], targets=["image"], n=2, raw=True, consensus=k)["image"])
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_a_bad_consensus_is_refused(fitted, bad):
    model, raw = fitted
    with pytest.raises(InputError, match="consensus"):
        model.generate({"image": raw.modalities["image"][:2]}, given=["image"], targets=["label"], consensus=bad)


def test_joint_samples_take_no_consensus(fitted):
    model, _ = fitted
    with pytest.raises(InputError, match="consensus"):
        model.sample(3, consensus=4)
