"""MMVAE+: codes are [shared z, private w_m]; the objective against its formula for every
estimator; cross generation keeps the shared code and varies the private draws; a fixed
private prior (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from omnivae import InputError
from omnivae.models.mmvae_plus import MMVAEPlus

from helpers.models import at_seed, batch_of, build, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT, PRIVATE = 4, 3


def test_mmvae_plus_codes_are_shared_plus_private(tiny_config, make_tensors):
    model = build(tiny_config, "mmvae_plus", private_dim=PRIVATE).eval()
    x = pick(make_tensors(16), model.names, 5)
    assert MMVAEPlus.modality_latent_dim(model.config) == LATENT + PRIVATE
    assert model.modalities["image"].encode(x["image"].float() / 255).mu.shape == (5, LATENT + PRIVATE)
    assert model.encode(x).shape == (5, LATENT)
    full = torch.randn(2, 5, LATENT + PRIVATE)
    assert model.decode(full, ["image"])["image"].shape == (2, 5, 1, 8, 8)
    torch.testing.assert_close(model.decode(full, ["image"], raw=True)["image"],
                               model.decode(full, ["image"], raw=True)["image"])  # full codes: no draws
    with pytest.raises(InputError, match="shared codes of size"):
        model.decode(torch.randn(5, LATENT + 1))


def test_mmvae_plus_cross_generation_varies_private_draws_with_a_fixed_shared_code(tiny_config, make_tensors):
    model = build(tiny_config, "mmvae_plus", private_dim=PRIVATE).eval()
    x = pick(make_tensors(16), model.names, 5)
    shared = model.encode(x, given=["label"])
    assert torch.equal(shared, model.encode(x, given=["label"]))  # the mixture mean does not move

    def cross(**kw):
        return model.generate(x, given=["label"], targets=["image"], mean=True, raw=True, **kw)["image"]

    a, b = cross(private_mean=False), cross(private_mean=False)
    assert not torch.allclose(a, b)  # only the private draws from r(w) differ
    torch.testing.assert_close(cross(), cross())  # mean=True also fixes the private code at r's mean
    z = torch.cat([shared, torch.zeros(5, PRIVATE)], -1)
    torch.testing.assert_close(cross(), model.decode(z, ["image"], raw=True)["image"])


@pytest.mark.parametrize("estimator", ["elbo", "iwae", "dreg"])
def test_mmvae_plus_objective_matches_formula(tiny_config, make_tensors, estimator):
    k, beta, d = 2, 1.5, LATENT
    model = build(tiny_config, "mmvae_plus", private_dim=PRIVATE, private_prior_scale=2.0, k=k, beta=beta,
                  estimator=estimator, rescale="none")  # the formula uses weight 1
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch, seed=5)
    mu, logvar, _ = model.encode_unimodal(batch)
    m, b, width = mu.shape
    torch.manual_seed(5)
    eps = torch.randn(m, k, b, width)
    aux = [torch.randn(m, k, b, PRIVATE) * model.private_log_scale[n].exp() for n in range(m)]
    per_m = []
    for i in range(m):
        code = mu[i] + eps[i] * torch.exp(0.5 * logvar[i])  # [K,B,W]
        z, w = code[..., :d], code[..., d:]
        log_w = sum(model.modalities[name].log_likelihood(torch.cat([z, w if n == i else aux[n][i]], -1),
                                                          batch.data[name]) for n, name in enumerate(model.names))
        log_qz = torch.stack([normal(mu[j, :, :d], logvar[j, :, :d]).log_prob(z).sum(-1) for j in range(m)])
        log_qz = torch.logsumexp(log_qz, 0) - math.log(m)
        log_qw = normal(mu[i, :, d:], logvar[i, :, d:]).log_prob(w).sum(-1)
        log_p = Normal(0.0, 1.0).log_prob(code).sum(-1)
        log_w = log_w + beta * (log_p - log_qz - log_qw)
        per_m.append(log_w.mean(0) if estimator == "elbo" else torch.logsumexp(log_w, 0) - math.log(k))
    want = -torch.stack(per_m).mean(0).mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert model.private_log_scale.detach().exp().allclose(torch.full((2, PRIVATE), 2.0))


def test_mmvae_plus_fixed_private_prior_and_three_modalities(tiny_config, make_tensors):
    names = ("image", "label", "vector")
    model = build(tiny_config, "mmvae_plus", names, private_dim=2, learn_private_prior=False)
    assert not model.private_log_scale.requires_grad
    data = make_tensors(8)
    out = at_seed(model, batch_of(model, data, {"vector": torch.tensor([True, False] * 4)}))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert model.private_log_scale.grad is None
    model.eval()
    x = pick(data, names, 3)
    assert model.generate(x, given=["vector"], n=2)["label"].shape == (2, 3)
    assert model.reconstruct(x)["vector"].shape == (3, 4)


def test_decoder_codes_append_a_private_code(tiny_config, make_tensors):
    """What training's adversarial term decodes: [z, w_n] with w_n from q_n where x_n is present
    and z comes from the posteriors, else from the auxiliary prior r_n."""
    model = build(tiny_config, "mmvae_plus", private_dim=PRIVATE)
    with torch.no_grad():
        model.private_log_scale.fill_(math.log(1e-3))  # r_n's draws are almost 0
    batch = batch_of(model, make_tensors(6), {"image": torch.tensor([True, False] * 3)})
    mu, logvar, present = model.encode_unimodal(batch)
    logvar = torch.full_like(logvar, -12.0)  # q's draws are almost its mean
    z = torch.randn(6, LATENT)
    post = model.decoder_codes("image", z, mu, logvar, present)
    prior = model.decoder_codes("image", z, mu, logvar, present, from_prior=True)
    assert post.shape == prior.shape == (6, LATENT + PRIVATE) and torch.equal(post[:, :LATENT], z)
    torch.testing.assert_close(post[0::2, LATENT:], mu[0, 0::2, LATENT:], atol=1e-2, rtol=0)  # image present
    assert post[1::2, LATENT:].abs().max() < 1e-2 and prior[:, LATENT:].abs().max() < 1e-2
