"""Ladder VAE: the precision-weighted merge, the residual posterior and the KL terms against hand
computations, the objective rebuilt step by step from its formula (both posteriors), the importance
weights' consistency with it, training, the user API's codes and config errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from omnivae import Batch, ConfigError, build_model
from omnivae.data.tensors import TensorData
from omnivae.distributions import Gaussian, kl_normal
from omnivae.metrics.likelihood import estimate_log_likelihoods, iw_log_likelihood
from omnivae.models.ladder import LadderVAE, merge, residual
from omnivae.priors import FlowPrior, fit_prior

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ladder(tiny_config):
    def build(layers=(6, 4, 2), seed=0, **options):
        torch.manual_seed(seed)
        return build_model(tiny_config("ladder_vae", ("image",), latent_dim=layers[-1], layers=list(layers),
                                       hidden=[16], **options))
    return build


def image_batch(make_tensors, n=8, seed=0, mask=None) -> Batch:
    return Batch({"image": make_tensors(n, seed)["image"]}, dict(mask or {}))


def test_merge_and_kl_by_hand():
    # N(1, 1) and N(3, 3): precision 1 + 1/3 = 4/3, so variance 3/4 and mean (1 + 3/3) * 3/4 = 1.5
    a = Gaussian(torch.tensor([1.0]), torch.tensor([0.0]))
    b = Gaussian(torch.tensor([3.0]), torch.tensor([math.log(3.0)]))
    q = merge(a, b)
    torch.testing.assert_close(q.mu, torch.tensor([1.5]))
    torch.testing.assert_close(q.logvar.exp(), torch.tensor([0.75]))
    # KL(N(1.5, 3/4) || N(3, 3)) = 0.5 * (log(3 / 0.75) + (0.75 + 1.5^2) / 3 - 1) = 0.5 log 4 = log 2
    torch.testing.assert_close(kl_normal(q.mu, q.logvar, b.mu, b.logvar), torch.tensor(math.log(2.0)))
    # a precise bottom-up estimate dominates a vague top-down one, and the merge is symmetric
    sharp, vague = Gaussian(torch.tensor([2.0]), torch.tensor([-9.0])), Gaussian(torch.tensor([-5.0]), torch.tensor([5.0]))
    assert float(merge(sharp, vague).mu) == pytest.approx(2.0, abs=1e-3)
    torch.testing.assert_close(merge(vague, sharp).mu, merge(sharp, vague).mu)


def test_residual_posterior_and_its_kl_by_hand():
    # offset N(1, 1/4) on the prior N(3, 4): mean 3 + 1 = 4, std 2 * 1/2 = 1
    p = Gaussian(torch.tensor([3.0]), torch.tensor([math.log(4.0)]))
    q = residual(Gaussian(torch.tensor([1.0]), torch.tensor([math.log(0.25)])), p)
    torch.testing.assert_close(q.mu, torch.tensor([4.0]))
    torch.testing.assert_close(q.logvar, torch.tensor([0.0]))
    # KL = 1/2 (mu^2 / sigma_p^2 + sigma^2 - 1 - log sigma^2) = 1/2 (1/4 + 1/4 - 1 + log 4), whatever mu_p is
    want = 0.5 * (0.25 + 0.25 - 1.0 + math.log(4.0))
    torch.testing.assert_close(kl_normal(q.mu, q.logvar, p.mu, p.logvar), torch.tensor(want))
    # a zero offset with unit scale gives the prior itself: no KL
    same = residual(Gaussian(torch.zeros(1), torch.zeros(1)), p)
    torch.testing.assert_close(kl_normal(same.mu, same.logvar, p.mu, p.logvar), torch.tensor(0.0))


@pytest.mark.parametrize("posterior", ["residual", "merge"])
def test_objective_matches_its_formula_step_by_step(ladder, make_tensors, posterior):
    """Rebuild -loss = log p(x|z1) - beta [KL(q(z3|x)||N(0,I)) + KL(q(z2|.)||p(z2|z3)) + KL(q(z1|.)||p(z1|z2))]
    from the model's networks with explicit variances and Bernoulli pixels, using the same noise."""
    model = ladder(beta=1.5, posterior=posterior)
    batch = image_batch(make_tensors)
    x = batch.data["image"].float() / 255
    mod = model.modalities["image"]
    h1 = mod.encoder(x)  # bottom-up: mu^, logvar^ per layer
    mu1, lv1 = h1.chunk(2, -1)
    mu2, lv2 = model.up[0](h1).chunk(2, -1)
    mu3, lv3 = model.up[1](torch.cat([mu2, lv2], -1)).chunk(2, -1)

    def merged(mu_hat, lv_hat, mu_p, lv_p):
        v_hat, v_p = lv_hat.exp(), lv_p.exp()
        if posterior == "residual":
            return mu_p + mu_hat, v_p * v_hat
        var = 1 / (1 / v_hat + 1 / v_p)
        return var * (mu_hat / v_hat + mu_p / v_p), var

    def kl(mu_a, var_a, mu_b, var_b):
        return 0.5 * (torch.log(var_b / var_a) + (var_a + (mu_a - mu_b) ** 2) / var_b - 1).sum(-1)

    torch.manual_seed(3)
    z3 = mu3 + lv3.mul(0.5).exp() * torch.randn_like(mu3)
    mp2, lp2 = model.down[1](z3).chunk(2, -1)
    mq2, vq2 = merged(mu2, lv2, mp2, lp2)
    z2 = mq2 + vq2.sqrt() * torch.randn_like(mq2)
    mp1, lp1 = model.down[0](z2).chunk(2, -1)
    mq1, vq1 = merged(mu1, lv1, mp1, lp1)
    z1 = mq1 + vq1.sqrt() * torch.randn_like(mq1)
    logits = mod.decoder(z1)
    rec = -F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(-1)
    kl3 = kl(mu3, lv3.exp(), torch.zeros_like(mu3), torch.ones_like(mu3))
    kl2, kl1 = kl(mq2, vq2, mp2, lp2.exp()), kl(mq1, vq1, mp1, lp1.exp())

    torch.manual_seed(3)
    out = model.loss(batch, beta_scale=0.5)
    torch.testing.assert_close(out.terms["rec"], rec.mean(), rtol=1e-5, atol=1e-4)
    for name, want in (("kl_z3", kl3), ("kl_z2", kl2), ("kl_z1", kl1)):
        torch.testing.assert_close(out.terms[name], want.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["kl"], (kl1 + kl2 + kl3).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.total, -(rec.mean() - 1.5 * 0.5 * (kl1 + kl2 + kl3).mean()), rtol=1e-5, atol=1e-4)
    assert all(float(out.terms[f"kl_z{i}"]) > 0 for i in (1, 2, 3))


def train(model, batch, steps=100):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = model.loss(batch)
        out.total.backward()
        opt.step()
        losses.append(float(out.terms["loss"]))
    return losses


def test_importance_weights_agree_with_the_objective_and_tighten_with_k(ladder, make_tensors):
    """E_q[log w] with one draw is the ELBO the loss computes with closed-form KLs; the k-draw
    estimate of log p(x) is above it and rises with k (Burda et al. 2016)."""
    model = ladder()
    batch = image_batch(make_tensors, n=32)
    train(model, batch)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = float(torch.stack([-model.loss(batch).total for _ in range(200)]).mean())
    log_w = model.log_importance_weights(batch, ["image"], 1000, torch.Generator().manual_seed(0))
    assert log_w.shape == (1000, 32)
    assert float(log_w.mean()) == pytest.approx(elbo, abs=0.01 * abs(elbo))
    gen = torch.Generator().manual_seed(1)
    estimates = [float(iw_log_likelihood(model, batch, ["image"], k=k, generator=gen).mean()) for k in (1, 32, 1024)]
    assert estimates[0] == pytest.approx(elbo, abs=0.05 * abs(elbo))
    assert elbo + 0.25 < estimates[1] < estimates[2], (elbo, estimates)


def test_likelihood_estimates_cover_the_ladder_and_mark_missing_rows(ladder, make_tensors):
    model = ladder().eval()
    mask = {"image": torch.tensor([True, False] * 4)}
    est = iw_log_likelihood(model, image_batch(make_tensors, mask=mask), ["image"], k=8, k_chunk=3)
    assert torch.isnan(est[1::2]).all() and torch.isfinite(est[0::2]).all()
    data = TensorData({"image": make_tensors(20)["image"]}, {})
    out = estimate_log_likelihoods(model, data, k=8, batch_size=7)
    assert out["n"] == 20 and out["k"] == 8 and out["joint"] == pytest.approx(out["image"]) and out["joint"] < 0


def test_a_few_training_steps_lower_the_loss_and_the_nll(ladder, make_tensors):
    model = ladder()
    batch = image_batch(make_tensors, n=32)
    data = TensorData(batch.data, {})

    def nll():
        return -estimate_log_likelihoods(model, data, k=16, seed=0)["joint"]

    before = nll()
    losses = train(model, batch, 60)
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    assert nll() < before - 5.0


def test_codes_are_the_top_layer_and_decode_through_conditional_means(ladder, make_tensors):
    model = ladder().eval()
    x = make_tensors(5)["image"]
    z = model.encode({"image": x})
    assert z.shape == (5, 2)
    top = model.bottom_up(x.float() / 255)[-1]
    torch.testing.assert_close(z, top.mu)
    z1 = model.down[0](model.down[1](z).chunk(2, -1)[0]).chunk(2, -1)[0]  # each lower layer at its mean
    torch.testing.assert_close(model.decode(z, raw=True)["image"], torch.sigmoid(model.modalities["image"].decoder(z1))
                               .view(5, 1, 8, 8))
    # reconstruct: posterior means at every layer, which differs from decoding the top code alone
    means = model.top_down(model.bottom_up(x.float() / 255), mean=True)
    want = torch.sigmoid(model.modalities["image"].decoder(means[-1][0])).view(5, 1, 8, 8)
    rec = model.reconstruct({"image": x}, raw=True)["image"]
    torch.testing.assert_close(rec, want)
    assert not torch.allclose(rec, model.decode(z, raw=True)["image"])
    gone = model.reconstruct({"image": x}, mask={"image": [True, False, True, True, True]}, raw=True)["image"]
    torch.testing.assert_close(gone[1], model.decode(torch.zeros(1, 2), raw=True)["image"][0])
    torch.testing.assert_close(gone[0], rec[0])


def test_a_fitted_prior_samples_top_codes(ladder, make_tensors):
    model = ladder().eval()
    data = TensorData({"image": make_tensors(40)["image"]}, {})
    fit_prior(model, data, kind="flow", steps=10, transforms=1, hidden=[8])
    assert isinstance(model.prior, FlowPrior) and model.prior.latent_dim == 2
    assert model.sample(4, raw=True)["image"].shape == (4, 1, 8, 8)


def test_config_rules(tiny_config):
    def config(**options):
        return build_model(tiny_config("ladder_vae", ("image",), **options)).config

    assert config(latent_dim=5).layers == [10, 5]
    cfg = build_model({"model": "ladder_vae", "layers": [12, 6, 3],
                       "modalities": {"image": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp"}}}).config
    assert cfg.latent_dim == 3
    assert isinstance(build_model({"model": "ladder_vae", "modalities": {"v": {"kind": "vector", "dim": 3}}}),
                      LadderVAE)
    with pytest.raises(ConfigError, match="at least two"):
        config(latent_dim=4, layers=[4])
    with pytest.raises(ConfigError, match="must equal latent_dim"):
        config(latent_dim=4, layers=[8, 3])
    with pytest.raises(ConfigError, match="layers"):
        config(latent_dim=4, layers=[8, 0, 4])
    assert config(latent_dim=4).posterior == "residual"
    with pytest.raises(ConfigError, match="posterior"):
        config(latent_dim=4, posterior="sum")
    with pytest.raises(ConfigError, match="free_bits"):
        config(latent_dim=4, free_bits=0.5)
    with pytest.raises(ConfigError, match="conditional_prior"):
        config(latent_dim=4, conditional_prior={})
    with pytest.raises(ConfigError, match="exactly one modality"):
        build_model(tiny_config("ladder_vae", ("image", "vector")))
