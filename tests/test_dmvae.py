"""DMVAE: codes are [shared z, private w_m]; the objective (joint and unimodal ELBOs) against
its formula with a missing modality; the shared latent is a product of experts with the prior
expert; the private prior is a fixed N(0, I) (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import ConfigError
from omnivae.models.dmvae import DMVAE

from helpers.models import at_seed, batch_of, build, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT, PRIVATE = 4, 3


def test_dmvae_objective_matches_formula(tiny_config, make_tensors):
    beta, d = 1.5, LATENT
    model = build(tiny_config, "dmvae", private_dim=PRIVATE, beta=beta, rescale="none")  # the formula uses weight 1
    mask = {"label": torch.tensor([True, True, False, True] * 4)}
    batch = batch_of(model, make_tensors(16), mask)
    out = at_seed(model, batch, seed=4)
    mu, logvar, present = model.encode_unimodal(batch)
    m, b, _ = mu.shape
    p = present.float().unsqueeze(-1)
    precision = 1 + (p * torch.exp(-logvar[..., :d])).sum(0)  # with the prior expert N(0, I)
    joint_mu, joint_logvar = (p * torch.exp(-logvar[..., :d]) * mu[..., :d]).sum(0) / precision, -torch.log(precision)
    posteriors = [(joint_mu, joint_logvar)] + [(mu[i, :, :d], logvar[i, :, :d]) for i in range(m)]
    torch.manual_seed(4)
    eps_z = torch.randn(1 + m, b, d)
    eps_w = torch.randn(1 + m, m, b, PRIVATE)
    kl_private = sum(kl_divergence(normal(mu[n, :, d:], logvar[n, :, d:]), Normal(0.0, 1.0)).sum(-1) * present[n]
                     for n in range(m))
    elbos = []
    for s, (q_mu, q_logvar) in enumerate(posteriors):
        z = q_mu + eps_z[s] * torch.exp(0.5 * q_logvar)
        rec = 0
        for n, name in enumerate(model.names):
            w = mu[n, :, d:] + eps_w[s, n] * torch.exp(0.5 * logvar[n, :, d:])
            rec = rec + model.modalities[name].log_likelihood(torch.cat([z, w], -1)[None], batch.data[name])[0] \
                * present[n]
        kl = kl_divergence(normal(q_mu, q_logvar), Normal(0.0, 1.0)).sum(-1) + kl_private
        counted = torch.ones(b) if s == 0 else present[s - 1].float()
        elbos.append((rec - beta * kl) * counted)
    want = -torch.stack(elbos).sum(0).mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)


def test_dmvae_shared_code_is_a_product_of_experts_with_the_prior(tiny_config, make_tensors):
    model = build(tiny_config, "dmvae", private_dim=PRIVATE).eval()
    x = pick(make_tensors(16), model.names, 5)
    assert DMVAE.modality_latent_dim(model.config) == LATENT + PRIVATE
    qi = model.modalities["image"].encode(x["image"])
    ql = model.modalities["label"].encode(x["label"])
    prec_i, prec_l = torch.exp(-qi.logvar[:, :LATENT]), torch.exp(-ql.logvar[:, :LATENT])
    want = (prec_i * qi.mu[:, :LATENT] + prec_l * ql.mu[:, :LATENT]) / (1 + prec_i + prec_l)
    torch.testing.assert_close(model.encode(x), want)
    alone = qi.mu[:, :LATENT] * prec_i / (1 + prec_i)  # one modality: still shrunk by the prior expert
    torch.testing.assert_close(model.encode(x, given=["image"]), alone)


def test_dmvae_private_prior_is_fixed_and_decoders_read_the_private_code(tiny_config, make_tensors):
    model = build(tiny_config, "dmvae", private_dim=PRIVATE).eval()
    assert "private_log_scale" not in dict(model.named_parameters())
    assert "private_log_scale" not in model.state_dict()  # a fixed N(0, I), rebuilt with the model
    x = pick(make_tensors(16), model.names, 5)
    shared = model.encode(x, given=["label"])

    def cross(**kw):
        return model.generate(x, given=["label"], targets=["image"], mean=True, raw=True, **kw)["image"]

    torch.testing.assert_close(cross(), cross())  # the private code at the prior's mean 0
    torch.testing.assert_close(cross(), model.decode(torch.cat([shared, torch.zeros(5, PRIVATE)], -1),
                                                     ["image"], raw=True)["image"])
    assert not torch.allclose(cross(private_mean=False), cross(private_mean=False))  # private draws differ
    w = model.private_prior_draw(0, (20000,))  # ... and come from N(0, I)
    assert w.mean(0).abs().max() < 0.05 and (w.std(0) - 1).abs().max() < 0.05
    with pytest.raises(ConfigError, match="private_dim"):
        build(tiny_config, "dmvae", private_dim=0)
