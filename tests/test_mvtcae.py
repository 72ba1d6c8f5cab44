"""MVTCAE: the total-correlation objective against its formula for several alpha, and alpha 0
as a product-of-experts VAE (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import ConfigError

from helpers.models import at_seed, batch_of, build, normal

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("alpha", [0.0, 5 / 6, 1.0])
def test_mvtcae_objective_matches_formula(tiny_config, make_tensors, alpha):
    names = ("image", "label", "vector")
    model = build(tiny_config, "mvtcae", names, alpha=alpha, beta=2.0, rescale="none")  # the formula uses weight 1
    mask = {"image": torch.tensor([1, 1, 0, 1] * 4).bool(), "label": torch.tensor([1, 0, 1, 1] * 4).bool()}
    batch = batch_of(model, make_tensors(16, 1), mask)
    out = at_seed(model, batch, seed=2)
    mu, logvar, present = model.encode_unimodal(batch)
    p = present.float().unsqueeze(-1)
    precision = (p * torch.exp(-logvar)).sum(0)
    q_mu, q_logvar = (p * torch.exp(-logvar) * mu).sum(0) / precision, -torch.log(precision)
    torch.manual_seed(2)
    z = q_mu + torch.randn(1, *q_mu.shape) * torch.exp(0.5 * q_logvar)
    rec = sum(model.modalities[n].log_likelihood(z, batch.data[n])[0] * present[i] for i, n in enumerate(names))
    q = normal(q_mu, q_logvar)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    kl_uni = sum(kl_divergence(q, normal(mu[i], logvar[i])).sum(-1) * present[i] for i in range(3))
    m = present.sum(0).float()
    objective = (m - alpha) / m * rec - 2.0 * ((1 - alpha) * kl + alpha / m * kl_uni)
    assert out.total.item() == pytest.approx(-objective.mean().item(), rel=1e-5)


def test_mvtcae_with_alpha_zero_is_a_poe_vae(tiny_config, make_tensors):
    model = build(tiny_config, "mvtcae", alpha=0.0, beta=1.5)
    out = at_seed(model, batch_of(model, make_tensors(16)))
    assert out.total.item() == pytest.approx(-(out.terms["rec"] - 1.5 * out.terms["kl"]).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="alpha"):
        build(tiny_config, "mvtcae", alpha=1.5)
