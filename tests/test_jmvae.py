"""JMVAE-kl: the objective against its formula on complete examples only; the joint encoder
is a network of its own over the raw inputs: the joint ELBO never reaches the unimodal
encoders (they learn only from alpha * KL(q(z|X) || q_m)), the feature networks follow each
modality's encoder architecture (text: the fitted vocabulary, also after loading); inference
uses the joint encoder for complete rows; a short training on shapes gives usable cross-modal
generation. The shared contract is in test_model_suite.py."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import Batch, ConfigError, build_model
from omnivae.io import load_model, save_model

from helpers.models import at_seed, batch_of, normal, pick

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tiny_config, **options):
    torch.manual_seed(0)
    return build_model(tiny_config("jmvae", ("image", "label"), latent_dim=4, **options))


def tiny_batch(model, make_tensors, n=16):
    data = make_tensors(n)
    return Batch({k: data[k] for k in model.names})


def grads_of(module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def nonzero(grads) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("beta", [0.0, 1.0], ids=["reconstruction-only", "joint-elbo"])
def test_joint_elbo_gradient_never_reaches_the_unimodal_encoders(tiny_config, make_tensors, beta):
    model = tiny(tiny_config, alpha=0.0, beta=beta)  # alpha 0: the objective is the joint ELBO alone
    batch = tiny_batch(model, make_tensors)
    model.loss(batch).total.backward()
    for name, mod in model.modalities.items():
        assert not nonzero(grads_of(mod.encoder)), f"the joint ELBO reached {name}'s unimodal encoder"
        assert nonzero(grads_of(mod.decoder)), name
    assert all(g is not None and g.abs().sum() > 0 for g in grads_of(model.joint_encoder))


def test_unimodal_encoders_learn_only_from_the_kl_term(tiny_config, make_tensors):
    model = tiny(tiny_config, alpha=0.5)
    batch = tiny_batch(model, make_tensors)
    torch.manual_seed(1)
    model.loss(batch).total.backward()
    with_kl = {n: [g.clone() for g in grads_of(m.encoder)] for n, m in model.modalities.items()}
    model.zero_grad()
    q = model.joint_posterior(batch)  # the KL term alone gives the unimodal encoders the same gradient
    mu, logvar, _ = model.encode_unimodal(batch)
    from omnivae.distributions import kl_normal
    (0.5 * kl_normal(q.mu, q.logvar, mu, logvar).sum(0).mean()).backward()
    for name, mod in model.modalities.items():
        for a, b in zip(with_kl[name], grads_of(mod.encoder)):
            torch.testing.assert_close(a, b)


def test_jmvae_objective_matches_formula(tiny_config, make_tensors):
    model = tiny(tiny_config, alpha=0.5, beta=1.5)
    batch = tiny_batch(model, make_tensors)
    out = at_seed(model, batch, seed=4)
    mu, logvar, _ = model.encode_unimodal(batch)
    q = model.joint_posterior(batch)  # its own network over the raw inputs
    torch.manual_seed(4)
    z = q.mu + torch.randn(1, *q.mu.shape) * q.std
    mods = model.modalities
    rec = sum(mods[n].spec.weight * mods[n].log_likelihood(z, batch.data[n])[0] for n in model.names)
    qn = normal(q.mu, q.logvar)
    kl = kl_divergence(qn, Normal(0.0, 1.0)).sum(-1)
    kl_uni = sum(kl_divergence(qn, normal(mu[i], logvar[i])).sum(-1) for i in range(2))
    want = -(rec - 1.5 * kl).mean() + 0.5 * kl_uni.mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.terms["kl_unimodal"].item() == pytest.approx(kl_uni.mean().item(), rel=1e-5)


PARTIAL = {"image": torch.tensor([True, False, True, True] * 4), "label": torch.tensor([True, True, False, True] * 4)}


def test_jmvae_uses_only_complete_examples(tiny_config, make_tensors):
    model = tiny(tiny_config)
    batch = batch_of(model, make_tensors(16), PARTIAL)
    out = at_seed(model, batch)
    complete = PARTIAL["image"] & PARTIAL["label"]
    assert out.terms["complete"].item() == pytest.approx(complete.float().mean().item())
    changed = {k: v.clone() for k, v in batch.data.items()}
    changed["image"][~complete] = 255 - changed["image"][~complete]  # present in some incomplete rows
    assert at_seed(model, Batch(changed, PARTIAL)).total.item() == pytest.approx(out.total.item(), rel=1e-6)


def test_jmvae_fuses_with_the_joint_encoder_or_the_given_posteriors(tiny_config, make_tensors):
    model = tiny(tiny_config).eval()
    x = pick(make_tensors(16), model.names, 5)
    batch = model.as_batch(x)
    mu, logvar, _ = model.encode_unimodal(batch)
    torch.testing.assert_close(model.encode(x), model.joint_posterior(batch).mu)
    torch.testing.assert_close(model.encode(x, given=["image"]), mu[0])  # a single posterior as it is
    mixed = model.encode(x, mask={"label": torch.tensor([True, False, True, True, True])})
    torch.testing.assert_close(mixed[1], mu[0, 1])
    torch.testing.assert_close(mixed[0], model.joint_posterior(batch).mu[0])


def test_jmvae_needs_two_modalities(tiny_config):
    with pytest.raises(ConfigError, match="at least two"):
        build_model(tiny_config("jmvae", ("image",)))
    with pytest.raises(ConfigError, match="alpha"):
        tiny(tiny_config, alpha=-1.0)


def test_joint_encoder_has_parameters_of_its_own(tiny_config, make_tensors):
    model = tiny(tiny_config)
    joint = {id(p) for p in model.joint_encoder.parameters()}
    unimodal = {id(p) for m in model.modalities.values() for p in m.parameters()}
    assert joint and not joint & unimodal
    assert sorted(model.joint_encoder.features) == sorted(model.names)
    x = {k: v for k, v in make_tensors(6).items() if k in model.names}
    model.eval()
    before_joint, before_image = model.encode(x), model.encode(x, given=["image"])
    with torch.no_grad():  # the joint posterior does not read the unimodal encoders at all
        for mod in model.modalities.values():
            for p in mod.encoder.parameters():
                p.add_(torch.randn_like(p))
    torch.testing.assert_close(model.encode(x), before_joint)
    assert not torch.allclose(model.encode(x, given=["image"]), before_image)


def test_feature_networks_follow_each_modality_architecture(tiny_config):
    from omnivae.modalities.image import ConvEncoder

    model = tiny(tiny_config, joint_features=10)
    assert model.joint_encoder.features["image"][-1][-1].out_features == 10  # mlp image encoder
    assert model.joint_encoder.features["label"][0].in_features == model.modalities["label"].spec.num_classes
    cfg = tiny_config("jmvae", ("image", "label"), latent_dim=4)
    cfg["modalities"]["image"].update(arch="conv", channels=[4, 8])
    conv = build_model(cfg).joint_encoder.features["image"]
    assert isinstance(conv, ConvEncoder) and conv.head.out_features == 128
    with pytest.raises(ConfigError, match="joint_features must be even"):
        tiny(tiny_config, joint_features=7)


def test_text_feature_network_uses_the_fitted_vocabulary_and_survives_loading(tmp_path):
    from omnivae.data.shapes import make_shapes
    from omnivae.modalities.text.networks import GRUEncoder

    raw = make_shapes(40, "easy", image_size=16)
    cfg = {"model": "jmvae", "latent_dim": 4, "joint_features": 16, "joint_hidden": [16],
           "modalities": {"image": {"kind": "image", "shape": [3, 16, 16], "channels": [4, 8]},
                          "text": {"kind": "text", "max_len": 12, "hidden": 16, "embed_dim": 8}}}
    torch.manual_seed(0)
    model = build_model(cfg, raw).eval()
    net = model.joint_encoder.features["text"]
    vocab = model.modalities["text"].spec.vocab_size
    assert isinstance(net, GRUEncoder) and net.embed.num_embeddings == vocab > 4
    x = {"image": raw.modalities["image"][:5], "text": list(raw.modalities["text"][:5])}
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.joint_encoder.features["text"].embed.num_embeddings == vocab
    assert torch.equal(model.encode(x), loaded.encode(x))
    assert torch.equal(model.encode(x, given=["text"]), loaded.encode(x, given=["text"]))
    assert model.generate(x, given=["image"], targets=["text"], mean=True) == \
        loaded.generate(x, given=["image"], targets=["text"], mean=True)


@pytest.mark.slow
def test_short_training_on_shapes_gives_cross_modal_generation_both_ways(tmp_path):
    from omnivae.data.tensors import TensorData
    from omnivae.metrics.coherence import build_scorers, conditional_coherence
    from omnivae.run import train_run
    from omnivae.tasks.demo import demo_config

    config = demo_config(None, "easy", "jmvae", 3000, 0, progress=False, max_epochs=6)
    config["train"].update(patience=None, tensorboard=False, num_threads=torch.get_num_threads())
    result = train_run(config, tmp_path / "run")
    model, splits = result.model, result.splits
    scorers = build_scorers(model, splits.train, epochs=3, seed=0)
    coherence = conditional_coherence(model, TensorData.from_raw(model, splits.test), scorers, n_max=300)
    image_to_text, text_to_image = coherence["image->text"]["all"], coherence["text->image"]["all"]
    assert image_to_text >= 0.9 and text_to_image >= 0.9, coherence
