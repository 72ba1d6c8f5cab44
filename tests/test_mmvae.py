"""MMVAE: the stratified ELBO and IWAE objectives against their formula, the IWAE bound
against the ELBO, and DReG's doubly reparameterised gradients (the shared contract is in
test_model_suite.py; the moment-matched mixture in test_fusion.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from helpers.models import at_seed, batch_of, build

pytestmark = pytest.mark.usefixtures("one_thread")


def make(tiny_config, **options):
    return build(tiny_config, "mmvae", **options)


def mmvae_log_w(model, batch, seed, detach_q=False):
    """log w [M,K,B] straight from the MMVAE formula, with the same noise as the model."""
    cfg = model.config
    qs = [model.modalities[n].encode(batch.data[n]) for n in model.names]
    mu, logvar = torch.stack([q.mu for q in qs]), torch.stack([q.logvar for q in qs])
    torch.manual_seed(seed)
    eps = torch.randn(len(qs), cfg.k, *mu.shape[1:])
    z = mu[:, None] + eps * torch.exp(0.5 * logvar)[:, None]
    rec = sum(model.modalities[n].log_likelihood(z.flatten(0, 1), batch.data[n]).view(z.shape[:3])
              for n in model.names)
    mq, lq = (mu.detach(), logvar.detach()) if detach_q else (mu, logvar)
    comps = torch.stack([Normal(mq[j], torch.exp(0.5 * lq[j])).log_prob(z).sum(-1) for j in range(len(qs))])
    log_q = torch.logsumexp(comps, 0) - math.log(len(qs))
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
    return rec + cfg.beta * (log_p - log_q)


@pytest.mark.parametrize("estimator", ["elbo", "iwae"])
def test_mmvae_objective_matches_formula(tiny_config, make_tensors, estimator):
    model = make(tiny_config, estimator=estimator, k=4, rescale="none")  # the formula uses weight 1
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch, seed=5)
    log_w = mmvae_log_w(model, batch, seed=5)
    per_m = log_w.mean(1) if estimator == "elbo" else torch.logsumexp(log_w, 1) - math.log(4)
    assert out.total.item() == pytest.approx(-per_m.mean().item(), rel=1e-5)


def test_mmvae_iwae_bound_is_tighter_than_elbo_on_the_same_draws(tiny_config, make_tensors):
    elbo, iwae = make(tiny_config, estimator="elbo", k=8), make(tiny_config, estimator="iwae", k=8)
    iwae.load_state_dict(elbo.state_dict())
    batch = batch_of(elbo, make_tensors(16))
    assert at_seed(iwae, batch).total < at_seed(elbo, batch).total
    one_e, one_i = make(tiny_config, estimator="elbo", k=1), make(tiny_config, estimator="iwae", k=1)
    one_i.load_state_dict(one_e.state_dict())
    assert at_seed(one_i, batch).total.item() == pytest.approx(at_seed(one_e, batch).total.item())


def test_mmvae_dreg_gradients_match_doubly_reparameterised_formula(tiny_config, make_tensors):
    model = make(tiny_config, estimator="dreg", k=4, rescale="none")
    batch = batch_of(model, make_tensors(8))
    model.zero_grad()
    at_seed(model, batch, seed=7).total.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # encoders: sum_k w_k^2 dlog w_k/dz dz/dphi with q's own parameters cut; decoders: sum_k w_k dlog w_k
    model.zero_grad()
    log_w = mmvae_log_w(model, batch, seed=7, detach_q=True)
    w = torch.softmax(log_w.detach(), 1)
    enc = [p for n, p in model.named_parameters() if ".encoder." in n]
    dec = [p for n, p in model.named_parameters() if ".decoder." in n]
    g_enc = torch.autograd.grad(-(w.pow(2) * log_w).sum(1).mean(), enc, retain_graph=True)
    g_dec = torch.autograd.grad(-(w * log_w).sum(1).mean(), dec)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, g in [*zip(enc, g_enc), *zip(dec, g_dec)]:
        torch.testing.assert_close(got[names[id(p)]], g, rtol=1e-4, atol=1e-5)


def test_mmvae_dreg_reports_the_iwae_bound(tiny_config, make_tensors):
    dreg, iwae = make(tiny_config, estimator="dreg", k=6), make(tiny_config, estimator="iwae", k=6)
    iwae.load_state_dict(dreg.state_dict())
    batch = batch_of(dreg, make_tensors(16))
    assert at_seed(dreg, batch).total.item() == pytest.approx(at_seed(iwae, batch).total.item(), rel=1e-5)
