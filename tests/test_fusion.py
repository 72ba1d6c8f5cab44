"""Fusion rules (PoE, MoE with its moment-matched Gaussian, MoPoE) and the Gaussian helpers
they rest on (KLs, masked means), checked against closed forms, torch, scipy and explicit
per-subset loops."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from omnivae.distributions import (LOGVAR_MAX, LOGVAR_MIN, Gaussian, clamp_logvar, kl_normal, log_standard_normal,
                                  masked_mean)
from omnivae.fusion import (all_subsets, mixture_log_prob, mixture_of_products, moment_matched_mixture,
                            product_of_experts, sample_mixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def experts(m: int, b: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, b, d, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(m, b, d, generator=g, dtype=torch.float64)
    return mu, logvar


def poe_by_hand(mus, variances, prior: bool, d: int):
    """Precision-weighted mean and 1/(sum of precisions) variance, in numpy; no expert
    at all (and no prior) falls back to N(0, 1)."""
    precisions = [1.0 / v for v in variances] + ([np.ones(d)] if prior else [])
    means = list(mus) + ([np.zeros(d)] if prior else [])
    if not precisions:
        return np.zeros(d), np.ones(d)
    total = sum(precisions)
    return sum(p * m for p, m in zip(precisions, means)) / total, 1.0 / total


# -- distributions ------------------------------------------------------------------------
def test_gaussian_kl_standard_matches_torch():
    mu, logvar = experts(1, 5, 3, seed=1)
    q = Gaussian(mu[0], logvar[0])
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu[0], torch.exp(0.5 * logvar[0])),
                                            torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(q.kl_standard(), ref)
    assert torch.allclose(Gaussian(torch.zeros(2, 3), torch.zeros(2, 3)).kl_standard(), torch.zeros(2))


def test_gaussian_log_prob_matches_torch_with_broadcast():
    mu, logvar = experts(1, 4, 3, seed=2)
    q = Gaussian(mu[0], logvar[0])
    z = torch.randn(7, 4, 3, dtype=torch.float64)  # K draws against [B,D]
    ref = torch.distributions.Normal(mu[0], torch.exp(0.5 * logvar[0])).log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_prob(z), ref)
    torch.testing.assert_close(log_standard_normal(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_gaussian_rsample_shape_moments_and_gradient():
    mu = torch.tensor([[1.0, -3.0]], requires_grad=True)
    logvar = torch.log(torch.tensor([[0.25, 4.0]]))
    torch.manual_seed(0)
    z = Gaussian(mu, logvar).rsample(20000)
    assert z.shape == (20000, 1, 2)
    torch.testing.assert_close(z.mean(0), torch.tensor([[1.0, -3.0]]), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([[0.5, 2.0]]), atol=0.05, rtol=0)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((1, 2), 20000.0))
    assert Gaussian(mu, logvar).rsample().shape == (1, 2)


def test_kl_normal_matches_torch_with_broadcast():
    from torch.distributions import Normal, kl_divergence

    mu_q, logvar_q = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    mu_p, logvar_p = torch.randn(2, 1, 5, 3, dtype=torch.float64), torch.randn(2, 1, 5, 3, dtype=torch.float64)
    want = kl_divergence(Normal(mu_q, torch.exp(0.5 * logvar_q)), Normal(mu_p, torch.exp(0.5 * logvar_p))).sum(-1)
    torch.testing.assert_close(kl_normal(mu_q, logvar_q, mu_p, logvar_p), want)
    assert kl_normal(mu_q, logvar_q, mu_q, logvar_q).abs().max() < 1e-12  # KL(q || q) = 0
    standard = kl_normal(mu_q, logvar_q, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(standard, Gaussian(mu_q, logvar_q).kl_standard())


def test_masked_mean_averages_present_examples_only():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    assert masked_mean(values, None).item() == pytest.approx(4.0)
    assert masked_mean(values, torch.tensor([True, True, True, False])).item() == pytest.approx(2.0)
    assert masked_mean(values, torch.zeros(4, dtype=torch.bool)).item() == 0.0  # none present: 0, not NaN


def test_clamp_logvar_range():
    out = clamp_logvar(torch.tensor([-100.0, 0.0, 100.0]))
    assert out.tolist() == [LOGVAR_MIN, 0.0, LOGVAR_MAX]


# -- product of experts -----------------------------------------------------------------------
@pytest.mark.parametrize("prior", [True, False])
def test_poe_two_experts_by_hand(prior):
    # expert 1: N(1, 0.5), expert 2: N(-2, 2) -> precisions 2 and 0.5
    mu = torch.tensor([[[1.0]], [[-2.0]]])
    logvar = torch.log(torch.tensor([[[0.5]], [[2.0]]]))
    q = product_of_experts(mu, logvar, torch.ones(1, 2, 1), prior_expert=prior)
    # without prior: precision 2.5, mean (2*1 + 0.5*(-2)) / 2.5 = 0.4
    # with prior:    precision 3.5, mean 1 / 3.5
    want_mu, want_var = (1 / 3.5, 1 / 3.5) if prior else (0.4, 0.4)
    assert q.mu.shape == (1, 1, 1)
    assert q.mu.item() == pytest.approx(want_mu, rel=1e-6)
    assert q.logvar.exp().item() == pytest.approx(want_var, rel=1e-6)


@pytest.mark.parametrize("prior", [True, False])
def test_poe_random_experts_match_numpy(prior):
    mu, logvar = experts(2, 6, 5, seed=3)
    q = product_of_experts(mu, logvar, torch.ones(1, 2, 6), prior_expert=prior)
    m_np, v_np = mu.numpy(), np.exp(logvar.numpy())
    want_mu, want_var = poe_by_hand([m_np[0], m_np[1]], [v_np[0], v_np[1]], prior, 5)
    np.testing.assert_allclose(q.mu[0].numpy(), want_mu, rtol=1e-10)
    np.testing.assert_allclose(q.logvar[0].exp().numpy(), want_var, rtol=1e-10)


@pytest.mark.parametrize("prior", [True, False])
def test_poe_absent_expert_changes_nothing(prior):
    mu, logvar = experts(2, 4, 3, seed=4)
    alone = product_of_experts(mu[:1], logvar[:1], torch.ones(1, 1, 4), prior_expert=prior)
    weights = torch.tensor([[[1.0] * 4, [0.0] * 4]])
    for junk in (0.0, 1e6, -1e6):  # whatever the absent expert holds
        mu2 = mu.clone()
        mu2[1] = junk
        q = product_of_experts(mu2, logvar, weights, prior_expert=prior)
        torch.testing.assert_close(q.mu, alone.mu)
        torch.testing.assert_close(q.logvar, alone.logvar)
    if not prior:  # one expert and no prior: the product is that expert
        torch.testing.assert_close(alone.mu[0], mu[0])
        torch.testing.assert_close(alone.logvar[0], logvar[0])


@pytest.mark.parametrize("prior", [True, False])
def test_poe_empty_subset_gives_standard_normal(prior):
    mu, logvar = experts(3, 5, 2, seed=5)
    q = product_of_experts(mu, logvar, torch.zeros(1, 3, 5), prior_expert=prior)
    torch.testing.assert_close(q.mu, torch.zeros(1, 5, 2, dtype=mu.dtype))
    torch.testing.assert_close(q.logvar, torch.zeros(1, 5, 2, dtype=mu.dtype))


@pytest.mark.parametrize("prior", [True, False])
def test_poe_batched_subsets_equal_per_subset_loop(prior):
    m, b, d = 3, 7, 4
    mu, logvar = experts(m, b, d, seed=6)
    g = torch.Generator().manual_seed(7)
    present = torch.rand(m, b, generator=g) < 0.6
    subsets = all_subsets(m)
    weights = subsets.unsqueeze(-1) & present.unsqueeze(0)
    q = product_of_experts(mu, logvar, weights, prior_expert=prior)
    assert q.mu.shape == (len(subsets), b, d)
    m_np, v_np = mu.numpy(), np.exp(logvar.numpy())
    for s in range(len(subsets)):
        for i in range(b):
            used = [j for j in range(m) if subsets[s, j] and present[j, i]]
            want_mu, want_var = poe_by_hand([m_np[j, i] for j in used], [v_np[j, i] for j in used], prior, d)
            np.testing.assert_allclose(q.mu[s, i].numpy(), want_mu, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(q.logvar[s, i].exp().numpy(), want_var, rtol=1e-9)


# -- subsets and MoPoE -----------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_all_subsets_enumerates_every_nonempty_subset(m):
    table = all_subsets(m)
    assert table.dtype == torch.bool and table.shape == (2 ** m - 1, m)
    rows = {tuple(r) for r in table.tolist()}
    assert len(rows) == 2 ** m - 1
    expected = {r for r in itertools.product([False, True], repeat=m) if any(r)}
    assert rows == expected
    sizes = table.sum(1).tolist()
    assert sizes == sorted(sizes)  # smallest first


@pytest.mark.parametrize("m", [0, -1, 17])
def test_all_subsets_rejects_bad_counts(m):
    with pytest.raises(ValueError):
        all_subsets(m)


@pytest.mark.parametrize("prior", [True, False])
def test_mixture_of_products_valid_mask_and_members(prior):
    m, b, d = 3, 6, 2
    mu, logvar = experts(m, b, d, seed=8)
    present = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    subsets = all_subsets(m)
    q, valid = mixture_of_products(mu, logvar, present, subsets, prior_expert=prior)
    assert valid.shape == (len(subsets), b) and valid.dtype == torch.bool
    for s in range(len(subsets)):
        for i in range(b):
            used = [j for j in range(m) if subsets[s, j] and present[j, i]]
            assert bool(valid[s, i]) == bool(used)
            single = product_of_experts(mu[used, i:i + 1], logvar[used, i:i + 1],
                                        torch.ones(1, len(used), 1), prior_expert=prior) if used else None
            if single is not None:
                torch.testing.assert_close(q.mu[s, i], single.mu[0, 0])
                torch.testing.assert_close(q.logvar[s, i], single.logvar[0, 0])
    assert not valid[:, 3].any()  # example 3 has no modality at all


# -- mixture of experts ------------------------------------------------------------------------
def test_mixture_log_prob_matches_scipy_over_present_components():
    m, b, d, k = 3, 5, 2, 4
    mu, logvar = experts(m, b, d, seed=9)
    present = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 0], [1, 0, 0, 0, 1]], dtype=torch.bool)
    z = torch.randn(k, b, d, dtype=torch.float64)
    got = mixture_log_prob(z, mu, logvar, present)
    assert got.shape == (k, b)
    std = np.exp(0.5 * logvar.numpy())
    for kk in range(k):
        for i in range(b):
            comps = [norm.logpdf(z[kk, i].numpy(), mu[j, i].numpy(), std[j, i]).sum()
                     for j in range(m) if present[j, i]]
            want = logsumexp(comps) - math.log(len(comps))  # log of the average density
            assert got[kk, i].item() == pytest.approx(want, rel=1e-9)


def test_mixture_log_prob_ignores_absent_component_values():
    mu, logvar = experts(2, 3, 2, seed=10)
    present = torch.tensor([[True] * 3, [False] * 3])
    z = torch.randn(3, 2, dtype=torch.float64)
    a = mixture_log_prob(z, mu, logvar, present)
    mu[1] = 1e3
    torch.testing.assert_close(mixture_log_prob(z, mu, logvar, present), a)
    torch.testing.assert_close(a, Gaussian(mu[0], logvar[0]).log_prob(z))


def test_mixture_log_prob_with_no_present_component_is_zero_with_finite_gradients():
    mu, logvar = experts(2, 3, 2, seed=12)
    mu.requires_grad_(True)
    present = torch.tensor([[True, False, False], [False, False, True]])
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    out = mixture_log_prob(z, mu, logvar, present)
    assert torch.isfinite(out).all() and (out[:, 1] == 0).all()
    out.sum().backward()
    assert torch.isfinite(mu.grad).all() and (mu.grad[:, 1] == 0).all()


def far_apart_components(b: int):
    mu = torch.tensor([0.0, 100.0, -100.0]).view(3, 1, 1).expand(3, b, 1).clone()
    return mu, torch.full_like(mu, -4.0)  # std 0.135: draws never leave their component


def component_of(z: torch.Tensor) -> torch.Tensor:
    return torch.argmin((z.view(1, -1) - torch.tensor([0.0, 100.0, -100.0]).view(3, 1)).abs(), 0)


def test_sample_mixture_only_picks_present_components():
    b = 4000
    mu, logvar = far_apart_components(b)
    weights = torch.zeros(3, b)
    weights[0, :2000] = weights[2, :2000] = 1.0  # first half: components 0 and 2
    weights[1, 2000:], weights[2, 2000:] = 3.0, 1.0  # second half: 1 and 2 in ratio 3:1
    torch.manual_seed(0)
    picked = component_of(sample_mixture(mu, logvar, weights))
    first, second = picked[:2000], picked[2000:]
    assert not (first == 1).any() and not (second == 0).any()
    assert 0.45 < (first == 0).float().mean() < 0.55
    assert 0.71 < (second == 1).float().mean() < 0.79


def test_sample_mixture_zero_row_falls_back_to_uniform():
    b = 3000
    mu, logvar = far_apart_components(b)
    torch.manual_seed(1)
    picked = component_of(sample_mixture(mu, logvar, torch.zeros(3, b)))
    shares = torch.bincount(picked, minlength=3).float() / b
    assert ((shares > 0.29) & (shares < 0.38)).all()


def test_sample_mixture_is_differentiable_in_the_picked_component():
    b = 50
    mu, logvar = far_apart_components(b)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    torch.manual_seed(2)
    z = sample_mixture(mu, logvar, torch.ones(3, b))
    z.sum().backward()
    picked = component_of(z.detach())
    onehot = torch.zeros(3, b)
    onehot[picked, torch.arange(b)] = 1.0
    torch.testing.assert_close(mu.grad[..., 0], onehot)  # dz/dmu = 1 for the picked component only
    assert (logvar.grad[..., 0][onehot == 0] == 0).all()
    assert (logvar.grad[..., 0][onehot == 1] != 0).all()


def test_sample_mixture_generator_makes_draws_reproducible():
    mu, logvar = experts(3, 8, 2, seed=11)
    draws = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        draws.append(sample_mixture(mu, logvar, torch.ones(3, 8), generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(draws[0], draws[1])


def test_moment_matched_mixture_has_the_mixture_mean_and_variance():
    """Against draws from the uniform mixture of the present components (torch.distributions)."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    mu, logvar = experts(3, 4, 2, seed=5)
    present = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)
    q = moment_matched_mixture(mu, logvar, present)
    assert q.mu.shape == q.logvar.shape == (4, 2)
    for b in range(3):
        on = present[:, b]
        mix = MixtureSameFamily(Categorical(torch.ones(int(on.sum()), dtype=torch.float64)),
                                Independent(Normal(mu[on, b], torch.exp(0.5 * logvar[on, b])), 1))
        torch.testing.assert_close(q.mu[b], mix.mean)
        torch.testing.assert_close(q.logvar[b].exp(), mix.variance)
    torch.testing.assert_close(q.mu[3], torch.zeros(2, dtype=torch.float64))  # nothing present: N(0, I)
    torch.testing.assert_close(q.logvar[3], torch.zeros(2, dtype=torch.float64))
    one = moment_matched_mixture(mu, logvar, torch.tensor([[True] * 4, [False] * 4, [False] * 4]))
    torch.testing.assert_close(one.mu, mu[0])  # one component: itself
    torch.testing.assert_close(one.logvar, logvar[0])
