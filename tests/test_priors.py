"""Gaussian mixture prior fitted after training: recovers known clusters, matches scikit-learn's
density, attaches to a model's sampling, and survives save/load (alone and inside a model)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import omnivae
from omnivae import ConfigError, InputError, build_model
from omnivae.priors import (GaussianMixturePrior, PriorConfig, attach_prior, build_prior, encode_latents,
                            fit_prior, supports_saved_prior)

pytestmark = pytest.mark.usefixtures("one_thread")

D = 4


def two_clusters(n=400, seed=0):
    """n codes [n,D]: a quarter around -4, three quarters around +4 (std 0.3)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.where(torch.arange(n) < n // 4, -4.0, 4.0).unsqueeze(1).expand(n, D)
    return centre + 0.3 * torch.randn(n, D, generator=gen)


@pytest.fixture
def tiny_model(tiny_config, make_raw):
    torch.manual_seed(0)
    raw = make_raw(64, names=("image", "label"))
    return build_model(tiny_config("mopoe", ("image", "label"), latent_dim=D), raw).eval(), raw


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_fitted_mixture_samples_from_both_clusters(covariance):
    prior = GaussianMixturePrior(D, {"components": 2, "covariance": covariance}).fit(two_clusters())
    assert prior.is_fitted
    z = prior.sample(2000, generator=torch.Generator().manual_seed(1))
    assert z.shape == (2000, D)
    low, high = (z.mean(1) < 0), (z.mean(1) > 0)
    assert 0.2 < float(low.float().mean()) < 0.3 and 0.7 < float(high.float().mean()) < 0.8
    torch.testing.assert_close(z[low].mean(0), torch.full((D,), -4.0), atol=0.1, rtol=0)
    torch.testing.assert_close(z[high].std(0), torch.full((D,), 0.3), atol=0.05, rtol=0)
    assert float(z.abs().min(1).values.min()) > 2.0  # nothing in the empty middle, unlike N(0, I)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_log_prob_matches_scikit_learn(covariance):
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(300, D)) @ rng.normal(size=(D, D))).float()
    prior = GaussianMixturePrior(D, {"components": 3, "covariance": covariance}).fit(z, seed=0)
    ref = GaussianMixture(3, covariance_type=covariance, reg_covar=1e-6, random_state=0).fit(z.double().numpy())
    torch.testing.assert_close(prior.log_prob(z[:20]).double(), torch.from_numpy(ref.score_samples(z[:20].double().numpy())),
                               atol=1e-3, rtol=1e-4)


def test_unfitted_prior_is_standard_normal_and_bad_arguments_raise():
    prior = GaussianMixturePrior(D)
    assert not prior.is_fitted and prior.config == PriorConfig()
    z = prior.sample(4000, generator=torch.Generator().manual_seed(0))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    with pytest.raises(InputError, match="at least 10 codes"):
        prior.fit(torch.randn(5, D))
    with pytest.raises(InputError, match=r"expected codes \[N, 4\]"):
        prior.fit(torch.randn(50, 3))
    with pytest.raises(InputError, match="NaN"):
        prior.fit(torch.full((50, D), float("nan")))
    with pytest.raises(ConfigError, match="components"):
        build_prior({"kind": "gmm", "components": 0}, D)
    with pytest.raises(ConfigError, match="kind"):
        build_prior({"kind": "vq"}, D)


def test_prior_state_alone_round_trips_through_json_and_safetensors(tmp_path):
    prior = GaussianMixturePrior(D, {"components": 2, "covariance": "full"}).fit(two_clusters())
    (tmp_path / "prior.json").write_text(json.dumps(prior.config.to_dict()))
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(tmp_path / "prior.safetensors"))
    again = build_prior(json.loads((tmp_path / "prior.json").read_text()), D)
    again.load_state_dict(load_file(str(tmp_path / "prior.safetensors")))
    assert again.is_fitted and again.config == prior.config
    torch.manual_seed(3)
    a = prior.sample(16)
    torch.manual_seed(3)
    assert torch.equal(again.sample(16), a)


def test_fit_prior_attaches_to_model_sampling(tiny_model):
    model, raw = tiny_model
    z = encode_latents(model, raw, batch_size=16)
    assert z.shape == (64, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # until the config has a prior field, attach warns it is not saved
        prior = fit_prior(model, raw, components=3, covariance="diag")
    assert prior.is_fitted and prior.config.components == 3
    torch.manual_seed(5)
    codes = model.prior_sample(7)
    torch.manual_seed(5)
    assert torch.equal(codes, prior.sample(7))
    out = model.sample(5)
    assert out["image"].shape == (5, 1, 8, 8) and out["label"].shape == (5,)
    with pytest.raises(InputError, match="latent_dim"):
        attach_prior(model, GaussianMixturePrior(D + 1))


@pytest.mark.skipif(not supports_saved_prior(build_model({"model": "vae", "modalities": {
    "v": {"kind": "vector", "dim": 2}}})), reason="needs the `prior` field in ModelConfig (models/base.py diff)")
def test_saved_model_with_fitted_prior_gives_same_samples(tiny_model, tmp_path):
    model, raw = tiny_model
    fit_prior(model, raw, components=3)
    assert model.config.prior.components == 3
    omnivae.save(model, tmp_path / "m")
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    assert header["config"]["prior"] == {"kind": "gmm", "components": 3, "covariance": "full"}
    loaded = omnivae.load(tmp_path / "m")
    assert loaded.prior.is_fitted
    torch.manual_seed(11)
    a = model.sample(6, raw=True)
    torch.manual_seed(11)
    b = loaded.sample(6, raw=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
