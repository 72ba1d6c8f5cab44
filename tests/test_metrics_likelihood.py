"""Importance-weighted likelihood estimates against a linear-Gaussian model whose exact
marginal and conditional likelihoods are known in closed form.

Model: z ~ N(0, I2); x1 = W1 z + b1 + N(0, S1) (3 dims), x2 = W2 z + b2 + N(0, S2) (2 dims),
built as an MVAE with two vector modalities whose decoders are single linear layers set by
hand. Then p(x1, x2) = N(b, W W^T + S). W_m^T S_m^-1 W_m is diagonal, so the exact
posterior is a product of diagonal Gaussian experts with the prior: the encoders can be
set to it, and the estimate is then exact for every K.
"""
import math

import numpy as np
import pytest
import torch

from omnivae.batch import Batch
from omnivae.data.tensors import TensorData
from omnivae.errors import InputError
from omnivae.metrics.likelihood import (
    conditional_log_likelihood,
    estimate_log_likelihoods,
    iw_log_likelihood,
)
from omnivae.models import build_model

W = {"x1": torch.tensor([[1.5, 0.0], [0.0, 0.8], [0.0, 0.0]], dtype=torch.float64),
     "x2": torch.tensor([[0.6, 0.0], [0.0, 1.2]], dtype=torch.float64)}
B = {"x1": torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64), "x2": torch.tensor([-0.4, 0.1], dtype=torch.float64)}
SIGMA = {"x1": torch.tensor([0.5, 0.7, 1.0], dtype=torch.float64), "x2": torch.tensor([0.4, 0.9], dtype=torch.float64)}


def linear_gaussian_model(mean_shift: float = 0.0, logvar_shift: float = 0.0):
    """The MVAE above; with shifts, its encoders are a deliberately wrong proposal."""
    config = {"model": "mvae", "latent_dim": 2, "modalities": {
        name: {"kind": "vector", "dim": len(B[name]), "hidden": []} for name in W}}
    model = build_model(config).double().eval()
    with torch.no_grad():
        for name, mod in model.modalities.items():
            w, b, s = W[name], B[name], SIGMA[name]
            dec, enc = mod.decoder[0], mod.encoder[0]
            dec.weight.copy_(w), dec.bias.copy_(b)
            mod.log_scale.copy_(torch.log(s))
            precision = (w / s[:, None] ** 2).T @ w  # diagonal by construction
            prec = torch.diagonal(precision)
            assert torch.allclose(precision, torch.diag(prec))
            a = (w / s[:, None] ** 2).T / prec[:, None]  # expert mean = a (x - b)
            enc.weight.zero_()
            enc.weight[:2].copy_(a)
            enc.bias[:2].copy_(-a @ b + mean_shift)
            enc.bias[2:].copy_(-torch.log(prec) + logvar_shift)
    return model


def exact_log_marginal(x: dict[str, torch.Tensor], names) -> torch.Tensor:
    w = torch.cat([W[n] for n in names])
    b = torch.cat([B[n] for n in names])
    cov = w @ w.T + torch.diag(torch.cat([SIGMA[n] for n in names]) ** 2)
    dist = torch.distributions.MultivariateNormal(b, covariance_matrix=cov)
    return dist.log_prob(torch.cat([x[n] for n in names], dim=1))


def sample_data(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return {n_: z @ W[n_].T + B[n_] + SIGMA[n_] * torch.randn(n, len(B[n_]), generator=g, dtype=torch.float64)
            for n_ in W}


def test_exact_posterior_gives_the_exact_likelihood_for_any_k():
    model, x = linear_gaussian_model(), sample_data()
    batch = Batch(x)
    for names in (["x1", "x2"], ["x1"], ["x2"]):
        exact = exact_log_marginal(x, names)
        est = iw_log_likelihood(model, batch, names, k=1)
        assert torch.allclose(est.double(), exact, atol=1e-4), names


def test_conditional_matches_the_gaussian_conditional():
    model, x = linear_gaussian_model(), sample_data()
    est = conditional_log_likelihood(model, Batch(x), ["x1"], ["x2"], k=3)
    # exact log p(x1 | x2) from the Gaussian conditioning formulas
    w = torch.cat([W["x1"], W["x2"]])
    cov = w @ w.T + torch.diag(torch.cat([SIGMA["x1"], SIGMA["x2"]]) ** 2)
    c11, c12, c22 = cov[:3, :3], cov[:3, 3:], cov[3:, 3:]
    mean = B["x1"] + (x["x2"] - B["x2"]) @ torch.linalg.solve(c22, c12.T)
    cond = torch.distributions.MultivariateNormal(mean, covariance_matrix=c11 - c12 @ torch.linalg.solve(c22, c12.T))
    assert torch.allclose(est.double(), cond.log_prob(x["x1"]), atol=1e-4)


def test_wrong_proposal_converges_to_the_exact_value_as_k_grows():
    model, x = linear_gaussian_model(mean_shift=0.6, logvar_shift=0.8), sample_data(n=48, seed=1)
    exact = exact_log_marginal(x, ["x1", "x2"])
    gaps = {}
    for k in (1, 30, 3000):
        g = torch.Generator().manual_seed(k)
        est = iw_log_likelihood(model, Batch(x), ["x1", "x2"], k=k, k_chunk=500, generator=g).double()
        gaps[k] = float((exact - est).mean())  # a lower bound: the gap is >= 0 on average
    assert gaps[1] > 0.5, gaps  # K=1 is the ELBO: clearly below
    assert gaps[1] > gaps[30] > gaps[3000] > -0.02, gaps
    assert gaps[3000] < 0.05, gaps


def test_missing_entries_are_nan_and_the_summary_skips_them():
    model, x = linear_gaussian_model(), sample_data(n=10)
    mask = {"x1": torch.tensor([True] * 7 + [False] * 3), "x2": torch.ones(10, dtype=torch.bool)}
    est = iw_log_likelihood(model, Batch(x, mask), ["x1", "x2"], k=2)
    assert torch.isnan(est[7:]).all() and torch.isfinite(est[:7]).all()
    data = TensorData({k: v.float() for k, v in x.items()}, mask)
    summary = estimate_log_likelihoods(model.float(), data, k=2, batch_size=4, conditionals=True)
    expected_joint = exact_log_marginal(x, ["x1", "x2"])[:7].mean()
    assert summary["joint"] == pytest.approx(float(expected_joint), abs=1e-3)
    assert summary["x2"] == pytest.approx(float(exact_log_marginal(x, ["x2"]).mean()), abs=1e-3)
    assert set(summary) >= {"joint", "x1", "x2", "x1->x2", "x2->x1", "k", "n"}
    assert math.isfinite(summary["x1->x2"])


def test_bad_arguments_raise():
    model, x = linear_gaussian_model(), sample_data(n=4)
    with pytest.raises(InputError, match="unknown modality"):
        iw_log_likelihood(model, Batch(x), ["nope"])
    with pytest.raises(InputError, match="positive"):
        iw_log_likelihood(model, Batch(x), ["x1"], k=0)
    with pytest.raises(InputError, match="disjoint"):
        conditional_log_likelihood(model, Batch(x), ["x1"], ["x1"])
    with pytest.raises(InputError, match="no"):
        iw_log_likelihood(model, Batch({"x1": x["x1"]}), ["x2"])
    assert np.isfinite(float(iw_log_likelihood(model, Batch(x), "x1", k=2).sum()))


def test_models_with_private_latents_get_a_clear_error(tiny_config, make_raw):
    """MMVAE+'s decoders read private codes that the shared posterior does not give."""
    from omnivae import InputError, build_model
    from omnivae.data.tensors import TensorData
    from omnivae.metrics.likelihood import estimate_log_likelihoods

    raw = make_raw(16)
    model = build_model(tiny_config("mmvae_plus", ("image", "label"), private_dim=2), raw)
    with pytest.raises(InputError, match="private latents"):
        estimate_log_likelihoods(model, TensorData.from_raw(model, raw), k=2)


def test_estimates_are_the_same_in_any_chunking_of_the_draws(monkeypatch):
    import omnivae.metrics.likelihood as likelihood

    model = linear_gaussian_model(mean_shift=0.3, logvar_shift=0.5)  # a proposal that is not exact
    gen = torch.Generator().manual_seed(0)
    x = {n: torch.randn(32, len(B[n]), generator=gen, dtype=torch.float64) for n in W}
    batch = Batch(x)
    whole = iw_log_likelihood(model, batch, ["x1", "x2"], k=12, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(likelihood, "MAX_CODES", 40)  # one draw per example at a time
    chunked = iw_log_likelihood(model, batch, ["x1", "x2"], k=12, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(whole, chunked, atol=1e-4)
    other = iw_log_likelihood(model, batch, ["x1", "x2"], k=12, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(whole, other, atol=1e-4)  # the estimate does depend on the draws
