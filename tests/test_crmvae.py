"""CRMVAE: the objective against its formula with missing modalities, and a single-modality
example where the coordination terms vanish (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from helpers.models import at_seed, batch_of, build, normal

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("image", "label", "vector")


def poe(mu, logvar, present):
    p = present.float().unsqueeze(-1)
    precision = (p * torch.exp(-logvar)).sum(0)
    return (p * torch.exp(-logvar) * mu).sum(0) / precision, -torch.log(precision)


def test_crmvae_objective_matches_formula(tiny_config, make_tensors):
    model = build(tiny_config, "crmvae", NAMES, beta=2.0, rescale="none")  # the formula uses weight 1
    mask = {"image": torch.tensor([1, 1, 0, 1] * 4).bool(), "label": torch.tensor([1, 0, 1, 1] * 4).bool()}
    batch = batch_of(model, make_tensors(16, 1), mask)
    out = at_seed(model, batch, seed=3)
    mu, logvar, present = model.encode_unimodal(batch)
    q_mu, q_logvar = poe(mu, logvar, present)
    torch.manual_seed(3)
    z_joint = q_mu + torch.randn(q_mu.shape) * torch.exp(0.5 * q_logvar)
    z_uni = mu + torch.randn(mu.shape) * torch.exp(0.5 * logvar)
    rec = sum((model.modalities[n].log_likelihood(z_joint[None], batch.data[n])[0]
               + model.modalities[n].log_likelihood(z_uni[i][None], batch.data[n])[0]) * present[i]
              for i, n in enumerate(NAMES))
    q = normal(q_mu, q_logvar)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1) \
        + sum(kl_divergence(q, normal(mu[i], logvar[i])).sum(-1) * present[i] for i in range(3))
    pi = 1 / (present.sum(0).float() + 1)
    want = -(pi * (rec - 2.0 * kl)).mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.terms["rec"].item() == pytest.approx((pi * rec).mean().item(), rel=1e-5)


def test_crmvae_single_modality_example_has_only_its_own_terms(tiny_config, make_tensors):
    """With x_image alone, q(z|X) = q_image: KL(q(z|X) || q_image) is 0 and pi = 1/2, so the
    objective is the mean of two reconstructions of x_image minus beta/2 * KL(q_image || N(0, I))."""
    model = build(tiny_config, "crmvae", rescale="none")
    only_image = {"label": torch.zeros(8, dtype=torch.bool)}
    batch = batch_of(model, make_tensors(8), only_image)
    out = at_seed(model, batch)
    q = model.modalities["image"].encode(batch.data["image"])
    want_kl = 0.5 * kl_divergence(normal(q.mu, q.logvar), Normal(0.0, 1.0)).sum(-1).mean()
    assert out.terms["kl"].item() == pytest.approx(want_kl.item(), rel=1e-5)
    out.total.backward()
    label_encoder = model.modalities["label"].encoder
    assert all(p.grad is None or not p.grad.any() for p in label_encoder.parameters())
