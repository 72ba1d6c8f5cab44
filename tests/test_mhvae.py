"""MHVAE: the hierarchical ELBO against its formula (complete and incomplete examples, the core
encoder reading zeros plus a flag for a missing modality); the single-draw modality term
averages to the closed-form KL; training is end to end (the core KL reaches the modality
encoders, unlike nexus); encode returns the core latent and generation decodes the mean of
p(z_m|z_c); a short training gives label-from-image generation. The shared contract is in
test_model_suite.py; modality dropout is checked in test_nexus.py (the same helper)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import Batch, ConfigError, build_model

from helpers.models import at_seed, batch_of, build, kl_std, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT, MOD = 3, 5


def tiny(tiny_config, **options):
    options = {"modality_dim": MOD, "hidden": [8], "latent_dim": LATENT, "rescale": "none", **options}
    return build(tiny_config, "mhvae", **options)


def core_input(z_m, present):
    """[z_image * s, s, z_label * s, s] for the core encoder, s the presence flag."""
    parts = []
    for z, s in zip(z_m, present):
        parts += [z * s[:, None], s[:, None]]
    return torch.cat(parts, -1)


@pytest.mark.parametrize("mask", [None, {"image": torch.tensor([True, False, True, True] * 4),
                                         "label": torch.tensor([True, True, False, False] * 4)}],
                         ids=["complete", "incomplete"])
def test_mhvae_objective_matches_formula(tiny_config, make_tensors, mask):
    model = tiny(tiny_config, beta=1.5, modality_beta=0.5, modality_dropout=0.0)
    batch = batch_of(model, make_tensors(16), mask)
    out = at_seed(model, batch, seed=2)
    names, present = model.names, torch.stack([batch.present(n) for n in model.names]).float()
    qs = [model.modalities[n].encode(batch.data[n]) for n in names]
    torch.manual_seed(2)
    eps = torch.randn(2, 16, MOD)
    z_m = [q.mu + eps[i] * q.std for i, q in enumerate(qs)]
    mu, logvar = model.core_encoder(core_input(z_m, present)).chunk(2, -1)
    z_c = mu + torch.randn(16, LATENT) * torch.exp(0.5 * logvar)
    rec = sum(present[i] * model.modalities[n].log_likelihood(z_m[i].unsqueeze(0), batch.data[n])[0]
              for i, n in enumerate(names))
    kl_m = 0
    for i, n in enumerate(names):
        p_mu, p_logvar = model.top_down[n](z_c).chunk(2, -1)
        log_q = normal(qs[i].mu, qs[i].logvar).log_prob(z_m[i]).sum(-1)
        log_p = normal(p_mu, p_logvar).log_prob(z_m[i]).sum(-1)
        kl_m = kl_m + present[i] * (log_q - log_p)
    kl_c = kl_std(Normal(mu, torch.exp(0.5 * logvar)))
    valid = present.sum(0) > 0
    want = -(rec - 0.5 * kl_m - 1.5 * kl_c)[valid].mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.terms["kl_core"].item() == pytest.approx(kl_c[valid].mean().item(), rel=1e-5)
    assert out.terms["kl_modalities"].item() == pytest.approx(kl_m[valid].mean().item(), rel=1e-5)


def test_modality_term_averages_to_the_closed_form_kl(tiny_config, make_tensors):
    """E over z_m of log q(z_m|x_m) - log p(z_m|z_c), at a fixed z_c, is KL(q || p(.|z_c))."""
    model = tiny(tiny_config)
    x = make_tensors(4)
    with torch.no_grad():
        q = model.modalities["label"].encode(x["label"])
        z_c = torch.randn(4, LATENT)
        p = model.conditional_prior_of("label", z_c)
        torch.manual_seed(0)
        z = q.rsample(100_000)
        estimate = (q.log_prob(z) - p.log_prob(z)).mean(0)
    exact = kl_divergence(normal(q.mu, q.logvar), normal(p.mu, p.logvar)).sum(-1)
    torch.testing.assert_close(estimate, exact, rtol=0.03, atol=0.02)


def test_training_is_end_to_end(tiny_config, make_tensors):
    """The core KL alone sends gradients into every modality encoder (z_c is inferred from the
    drawn z_m), and the modality terms reach the core encoder."""
    model = tiny(tiny_config, modality_dropout=0.0)
    batch = batch_of(model, make_tensors(16))
    mu, logvar, present = model.encode_unimodal(batch)
    z_m = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    model.top_posterior(z_m, present).kl_standard().mean().backward()
    for name, mod in model.modalities.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.encoder.parameters()), name
    no_core_kl = tiny(tiny_config, beta=0.0, modality_dropout=0.0)
    at_seed(no_core_kl, batch).total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in no_core_kl.core_encoder.parameters())


def test_encode_returns_the_core_latent_and_generation_decodes_its_prior_mean(tiny_config, make_tensors):
    model = tiny(tiny_config).eval()
    x = pick(make_tensors(16), model.names, 5)
    mu, _, present = model.encode_unimodal(model.as_batch(x))
    only_label = torch.tensor([[False] * 5, [True] * 5])
    want = model.core_encoder(core_input([mu[0], mu[1]], only_label.float())).chunk(2, -1)[0]
    z_c = model.encode(x, given=["label"])
    torch.testing.assert_close(z_c, want)
    assert z_c.shape == (5, LATENT)
    image = model.generate(x, given=["label"], targets=["image"], mean=True, raw=True)["image"]
    p_mu = model.top_down["image"](z_c)[..., :MOD]
    torch.testing.assert_close(image, model.modalities["image"].generate(p_mu))
    assert model.sample(4)["image"].shape == (4, 1, 8, 8)


def test_mhvae_config_errors(tiny_config):
    with pytest.raises(ConfigError, match="modality_beta"):
        tiny(tiny_config, modality_beta=-0.5)
    with pytest.raises(ConfigError, match="modality_dim"):
        tiny(tiny_config, modality_dim=0)
    with pytest.raises(ConfigError, match="at least two"):
        build_model(tiny_config("mhvae", ("label",)))


def test_short_training_generates_the_label_from_the_image(tiny_config, make_tensors):
    torch.manual_seed(0)
    model = build_model(tiny_config("mhvae", ("image", "label"), latent_dim=4, modality_dim=8, hidden=[32]))
    data = make_tensors(96)
    batch = Batch({k: data[k] for k in model.names})
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(400):
        opt.zero_grad()
        model.loss(batch).total.backward()
        opt.step()
    model.eval()
    test = make_tensors(200, seed=1)
    label = model.generate({"image": test["image"]}, targets=["label"], mean=True, raw=True)["label"]
    assert (label == test["label"]).float().mean() > 0.9
