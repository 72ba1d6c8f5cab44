"""TELBO: the triple ELBO against its formula with missing modalities; the decoders (and every
other likelihood parameter) learn from the joint ELBO only; inference uses the joint network
on complete inputs (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import ConfigError

from helpers.models import at_seed, batch_of, build, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("image", "label", "vector")
SMALL = {"joint_features": 8, "joint_hidden": [16]}


def joint_elbo(model, batch, z, q, beta):
    rec = sum(model.modalities[n].log_likelihood(z, batch.data[n])[0] for n in model.names)
    return rec - beta * kl_divergence(normal(q.mu, q.logvar), Normal(0.0, 1.0)).sum(-1)


def test_telbo_objective_matches_formula(tiny_config, make_tensors):
    beta = 2.0
    model = build(tiny_config, "telbo", NAMES, beta=beta, rescale="none", **SMALL)  # the formula uses weight 1
    mask = {"image": torch.tensor([1, 1, 0, 1] * 4).bool(), "vector": torch.tensor([1, 0, 1, 1] * 4).bool()}
    batch = batch_of(model, make_tensors(16, 2), mask)
    out = at_seed(model, batch, seed=6)
    mu, logvar, present = model.encode_unimodal(batch)
    q = model.joint_posterior(batch)
    torch.manual_seed(6)
    z = q.mu + torch.randn(1, *q.mu.shape) * q.std
    eps = torch.randn(mu.shape)
    complete = present.all(0)
    objective = torch.where(complete, joint_elbo(model, batch, z, q, beta), torch.zeros(16))
    for i, name in enumerate(NAMES):
        z_i = mu[i] + eps[i] * torch.exp(0.5 * logvar[i])
        uni = model.modalities[name].log_likelihood(z_i[None], batch.data[name])[0] \
            - beta * kl_divergence(normal(mu[i], logvar[i]), Normal(0.0, 1.0)).sum(-1)
        objective = objective + uni * present[i]
    assert out.total.item() == pytest.approx(-objective.mean().item(), rel=1e-5)
    assert out.terms["complete"].item() == pytest.approx(complete.float().mean().item())


def test_telbo_decoders_learn_from_the_joint_elbo_only(tiny_config, make_tensors):
    beta = 1.0
    model = build(tiny_config, "telbo", NAMES, rescale="none", **SMALL)
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch, seed=1)
    out.total.backward()
    generative = {n: p.grad.clone() for n, p in model.named_parameters()
                  if p.requires_grad and (".decoder." in n or "log_scale" in n)}
    assert "modalities.vector.log_scale" in generative and all(g.abs().sum() > 0 for g in generative.values())
    model.zero_grad()
    q = model.joint_posterior(batch)
    torch.manual_seed(1)
    z = q.mu + torch.randn(1, *q.mu.shape) * q.std
    (-joint_elbo(model, batch, z, q, beta).mean()).backward()  # the joint ELBO alone
    for name, grad in generative.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, msg=name)


def test_telbo_unimodal_terms_train_only_the_unimodal_encoders(tiny_config, make_tensors):
    model = build(tiny_config, "telbo", rescale="none", **SMALL)
    apart = {"image": torch.tensor([True, False] * 8), "label": torch.tensor([False, True] * 8)}  # none complete
    out = at_seed(model, batch_of(model, make_tensors(16), apart))
    out.total.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        got = p.grad is not None and bool(p.grad.any())
        assert got == (".encoder." in name and not name.startswith("joint_encoder")), name


def test_telbo_inference_uses_the_joint_network_on_complete_inputs(tiny_config, make_tensors):
    model = build(tiny_config, "telbo", **SMALL).eval()
    x = pick(make_tensors(16), model.names, 5)
    batch = model.as_batch(x)
    torch.testing.assert_close(model.encode(x), model.joint_posterior(batch).mu)
    torch.testing.assert_close(model.encode(x, given=["label"]), model.modalities["label"].encode(x["label"]).mu)
    with pytest.raises(ConfigError, match="at least two modalities"):
        build(tiny_config, "telbo", ("image",))
    with pytest.raises(ConfigError, match="joint_features"):
        build(tiny_config, "telbo", joint_features=7)
