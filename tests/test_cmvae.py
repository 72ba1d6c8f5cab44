"""CMVAE: the objective against its formula with the explicit expectation over clusters;
cluster ids; draws from the mixture prior (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from omnivae import ConfigError

from helpers.models import at_seed, batch_of, build, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT, PRIVATE, CLUSTERS = 4, 3, 3


@pytest.mark.parametrize("estimator", ["elbo", "iwae"])
def test_cmvae_objective_matches_formula(tiny_config, make_tensors, estimator):
    k, beta, d = 2, 1.5, LATENT
    model = build(tiny_config, "cmvae", private_dim=PRIVATE, clusters=CLUSTERS, k=k, beta=beta,
                  estimator=estimator, rescale="none")  # the formula uses weight 1
    with torch.no_grad():
        model.cluster_logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch, seed=5)
    mu, logvar, _ = model.encode_unimodal(batch)
    m, b, width = mu.shape
    torch.manual_seed(5)
    eps = torch.randn(m, k, b, width)
    aux = [torch.randn(m, k, b, PRIVATE) * model.private_log_scale[n].exp() for n in range(m)]
    log_pi = torch.log_softmax(model.cluster_logits, 0)
    per_m = []
    for i in range(m):
        code = mu[i] + eps[i] * torch.exp(0.5 * logvar[i])  # [K,B,W]
        z, w = code[..., :d], code[..., d:]
        rec = sum(model.modalities[name].log_likelihood(torch.cat([z, w if n == i else aux[n][i]], -1),
                                                        batch.data[name]) for n, name in enumerate(model.names))
        log_joint = torch.stack([log_pi[c] + Normal(model.cluster_means[c], 1.0).log_prob(z).sum(-1)
                                 for c in range(CLUSTERS)])  # [C,K,B]: log p(c) + log p(z|c)
        q_c = torch.softmax(log_joint, 0)  # q(c|z,X) = p(c|z)
        cluster_term = (q_c * (log_joint - torch.log(q_c))).sum(0)  # E_q(c) [log p(c) p(z|c) - log q(c)]
        log_qz = torch.stack([normal(mu[j, :, :d], logvar[j, :, :d]).log_prob(z).sum(-1) for j in range(m)])
        log_qz = torch.logsumexp(log_qz, 0) - math.log(m)
        log_qw = normal(mu[i, :, d:], logvar[i, :, d:]).log_prob(w).sum(-1)
        log_w = rec + beta * (cluster_term + Normal(0.0, 1.0).log_prob(w).sum(-1) - log_qz - log_qw)
        per_m.append(log_w.mean(0) if estimator == "elbo" else torch.logsumexp(log_w, 0) - math.log(k))
    want = -torch.stack(per_m).mean(0).mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)


def test_cmvae_cluster_ids(tiny_config, make_tensors):
    model = build(tiny_config, "cmvae", private_dim=PRIVATE, clusters=CLUSTERS).eval()
    x = pick(make_tensors(16), model.names, 6)
    image_means = model.modalities["image"].encode(x["image"]).mu[:, :LATENT]
    with torch.no_grad():  # put the clusters on the image codes of examples 3, 1 and 4
        model.cluster_means.copy_(image_means[[3, 1, 4]])
    ids = model.cluster(x, given=["image"])
    assert ids.dtype == torch.long and ids.shape == (6,)
    assert ids[[3, 1, 4]].tolist() == [0, 1, 2]
    # by hand: the mean over the given modalities of p(c | z_m), z_m the posterior mean
    log_pi = torch.log_softmax(model.cluster_logits, 0)
    post = []
    for name in model.names:
        z = model.modalities[name].encode(x[name]).mu[:, :LATENT]
        post.append(torch.softmax(log_pi + Normal(model.cluster_means, 1.0).log_prob(z[:, None]).sum(-1), -1))
    want = (post[0] + post[1]) / 2
    torch.testing.assert_close(model.cluster_probabilities(x), want)
    assert torch.equal(model.cluster(x), want.argmax(-1))
    with torch.no_grad():
        model.cluster_logits.copy_(torch.tensor([0.0, 3.0, 0.0]))
    nothing = {"image": [False] * 6, "label": [False] * 6}  # no modality present: the prior's likeliest cluster
    assert model.cluster(x, mask=nothing).tolist() == [1] * 6


def test_cmvae_prior_draws_come_from_the_mixture(tiny_config):
    model = build(tiny_config, "cmvae", private_dim=PRIVATE, clusters=CLUSTERS).eval()
    with torch.no_grad():
        model.cluster_means.copy_(torch.tensor([[20.0] * LATENT, [-20.0] * LATENT, [0.0] * LATENT]))
        model.cluster_logits.copy_(torch.log(torch.tensor([0.7, 0.3, 1e-9])))
    z = model.prior_sample(4000)
    nearest = torch.cdist(z, model.cluster_means).argmin(-1)
    share = torch.bincount(nearest, minlength=CLUSTERS).float() / len(z)
    assert share[0].item() == pytest.approx(0.7, abs=0.04) and share[2] == 0
    assert (z - model.cluster_means[nearest]).std().item() == pytest.approx(1.0, abs=0.05)
    assert model.sample(3)["label"].shape == (3,)
    with pytest.raises(ConfigError, match="clusters"):
        build(tiny_config, "cmvae", clusters=0)
