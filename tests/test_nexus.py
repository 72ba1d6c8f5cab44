"""Nexus: the objective against its formula (complete and incomplete examples); the top level
reads and rebuilds detached modality latents, so it never trains the modality VAEs; encode
returns the nexus latent and every generation goes through it; forced modality dropout (the
helper in models/hierarchical.py) keeps a non-empty proper subset and only while training; a short
training gives label-from-image generation. The shared contract is in test_model_suite.py."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from omnivae import Batch, ConfigError, InputError, build_model
from omnivae.models.hierarchical import drop_modalities

from helpers.models import at_seed, batch_of, build, kl_std, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT, MOD = 3, 5


def tiny(tiny_config, **options):
    options = {"modality_dim": MOD, "message_dim": 4, "hidden": [8], "latent_dim": LATENT, "rescale": "none",
               **options}
    return build(tiny_config, "nexus", **options)


def hand_objective(model, batch, seed, gamma, beta, modality_beta):
    """The module docstring's loss, from the networks' weights (no modality dropout)."""
    names, present = model.names, torch.stack([batch.present(n) for n in model.names]).float()
    qs = [model.modalities[n].encode(batch.data[n]) for n in names]
    torch.manual_seed(seed)
    eps = torch.randn(len(names), len(batch), MOD)
    z_m = [q.mu + eps[i] * q.std for i, q in enumerate(qs)]
    rec = sum(present[i] * model.modalities[n].log_likelihood(z_m[i].unsqueeze(0), batch.data[n])[0]
              for i, n in enumerate(names))
    kl_m = sum(present[i] * kl_std(normal(q.mu, q.logvar)) for i, q in enumerate(qs))
    msgs = [z_m[i].detach() @ model.messages[n].weight.T + model.messages[n].bias for i, n in enumerate(names)]
    mean = sum(present[i, :, None] * msgs[i] for i in range(len(names))) / present.sum(0).clamp_min(1)[:, None]
    mu, logvar = model.nexus_encoder(mean).chunk(2, -1)
    z = mu + torch.randn(len(batch), LATENT) * torch.exp(0.5 * logvar)
    sq = sum(present[i] * (z_m[i].detach() - model.top_down[n](z)).pow(2).sum(-1) for i, n in enumerate(names))
    kl_top = kl_std(Normal(mu, torch.exp(0.5 * logvar)))
    objective = rec - modality_beta * kl_m - gamma * sq - beta * kl_top
    valid = present.sum(0) > 0
    return -objective[valid].mean(), sq[valid].mean(), kl_top[valid].mean()


@pytest.mark.parametrize("mask", [None, {"image": torch.tensor([True, False, True, True] * 4),
                                         "label": torch.tensor([True, True, False, False] * 4)}],
                         ids=["complete", "incomplete"])
def test_nexus_objective_matches_formula(tiny_config, make_tensors, mask):
    model = tiny(tiny_config, gamma=2.0, beta=1.5, modality_beta=0.5, modality_dropout=0.0)
    batch = batch_of(model, make_tensors(16), mask)
    out = at_seed(model, batch, seed=3)
    want, sq, kl_top = hand_objective(model, batch, 3, gamma=2.0, beta=1.5, modality_beta=0.5)
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.terms["rec_nexus"].item() == pytest.approx(sq.item(), rel=1e-5)
    assert out.terms["kl_nexus"].item() == pytest.approx(kl_top.item(), rel=1e-5)


def test_the_top_level_never_trains_the_modality_vaes(tiny_config, make_tensors):
    """gamma and beta weigh only the top level: the modality networks' gradients do not move."""
    grads = []
    for gamma, beta in ((1.0, 1.0), (7.0, 3.0)):
        model = tiny(tiny_config, gamma=gamma, beta=beta, modality_dropout=0.0)
        at_seed(model, batch_of(model, make_tensors(16)), seed=1).total.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad})
    bottom = [k for k in grads[0] if k.startswith("modalities.")]
    top = [k for k in grads[0] if not k.startswith("modalities.")]
    assert bottom and top
    for k in bottom:
        torch.testing.assert_close(grads[0][k], grads[1][k])
    assert all(not torch.allclose(grads[0][k], grads[1][k]) for k in top)


def test_encode_returns_the_nexus_latent_and_generation_goes_through_it(tiny_config, make_tensors):
    model = tiny(tiny_config).eval()
    x = pick(make_tensors(16), model.names, 5)
    batch = model.as_batch(x)
    mu, _, _ = model.encode_unimodal(batch)
    both = (model.messages["image"](mu[0]) + model.messages["label"](mu[1])) / 2
    torch.testing.assert_close(model.encode(x), model.nexus_encoder(both).chunk(2, -1)[0])
    z = model.encode(x, given=["label"])
    torch.testing.assert_close(z, model.nexus_encoder(model.messages["label"](mu[1])).chunk(2, -1)[0])
    assert z.shape == (5, LATENT)
    image = model.generate(x, given=["label"], targets=["image"], mean=True, raw=True)["image"]
    torch.testing.assert_close(image, model.modalities["image"].generate(model.top_down["image"](z)))
    before = model.reconstruct(x, raw=True)["image"]
    with torch.no_grad():  # the image comes back through the nexus, so its top-down network matters
        for p in model.top_down["image"].parameters():
            p.add_(torch.randn_like(p))
    assert not torch.allclose(model.generate(x, given=["label"], targets=["image"], mean=True, raw=True)["image"],
                              image)
    assert not torch.allclose(model.reconstruct(x, raw=True)["image"], before)
    with pytest.raises(InputError, match="top-level codes of size 3"):
        model.decode(torch.randn(5, MOD))


def test_modality_dropout_keeps_a_non_empty_proper_subset():
    torch.manual_seed(0)
    present = torch.ones(3, 4000, dtype=torch.bool)
    present[2, :1000] = False  # two present there
    present[1:, 1000:1500] = False  # one present: never dropped
    keep = drop_modalities(present, 1.0)
    assert not (keep & ~present).any()
    counts = keep.sum(0)
    assert (counts[:1000] == 1).all() and (counts[1000:1500] == 1).all()
    full = counts[1500:]
    assert set(full.tolist()) == {1, 2}  # three present: one or two kept, each size about half the time
    assert 0.4 < (full == 1).float().mean() < 0.6
    kept = keep[:, 1500:].float().mean(1)
    assert torch.allclose(kept, torch.full((3,), 0.5), atol=0.05)  # no modality favoured
    assert torch.equal(drop_modalities(present, 0.0), present)
    some = drop_modalities(torch.ones(3, 4000, dtype=torch.bool), 0.3).sum(0)
    assert 0.25 < (some < 3).float().mean() < 0.35  # rows dropped at the configured rate


def test_modality_dropout_only_while_training(tiny_config):
    model = tiny(tiny_config, modality_dropout=0.9)
    present = torch.ones(2, 500, dtype=torch.bool)
    torch.manual_seed(0)
    assert (model.seen_by_top(present).sum(0) == 1).float().mean() > 0.8
    model.eval()
    assert torch.equal(model.seen_by_top(present), present)


def test_nexus_config_errors(tiny_config):
    with pytest.raises(ConfigError, match="modality_dropout"):
        tiny(tiny_config, modality_dropout=1.0)
    with pytest.raises(ConfigError, match="gamma"):
        tiny(tiny_config, gamma=-1.0)
    with pytest.raises(ConfigError, match="at least two"):
        build_model(tiny_config("nexus", ("image",)))


def test_the_nexus_rebuild_outweighs_its_kl_by_default(tiny_config, make_tensors):
    """gamma defaults to 3 (at 1 the nexus dropped caption colours on shapes medium,
    docs/models.md) and weighs the squared error in the loss: the default model's loss is the
    gamma=3 formula, not the gamma=1 one."""
    model = tiny(tiny_config, modality_dropout=0.0)
    assert model.config.gamma == 3.0
    batch = batch_of(model, make_tensors(16), None)
    out = at_seed(model, batch, seed=3)
    want, sq, _ = hand_objective(model, batch, 3, gamma=3.0, beta=1.0, modality_beta=1.0)
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert sq.item() > 0  # so the gamma=1 formula gives another loss


def test_short_training_generates_the_label_from_the_image(tiny_config, make_tensors):
    torch.manual_seed(0)
    model = build_model(tiny_config("nexus", ("image", "label"), latent_dim=4, modality_dim=8, hidden=[32]))
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
