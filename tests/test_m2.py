"""M2 (omnivae.models.m2): the labelled and unlabelled terms against hand computations, one
class at a time, on tiny tensors (3 classes); training behaviour with few labels; the user API
(label -> image, image -> label, classify); config checks; and the data option `labelled`
(omnivae.data.labelled). The shared contract is tests/test_model_suite.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnivae import Batch, ConfigError, InputError
from omnivae.data.labelled import balanced_rows, keep_labels
from omnivae.models import build_model
from omnivae.run import RunConfig, split_data

pytestmark = pytest.mark.usefixtures("one_thread")
K = 3  # classes of the tiny data (tests/conftest.py)


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config("m2", alpha=0.7, beta=1.5))


def by_hand(model, batch, eps):
    """Per-example (-L or -U) [B] and cross-entropy [B], class by class with plain torch."""
    x = batch.data["image"]
    q_x = model.modalities["image"].encode(x)
    feats = torch.cat([q_x.mu, q_x.logvar], -1)
    pixels = x.float().div(255).flatten(1)
    log_pi = torch.log_softmax(model.classifier(x.float().div(255)), -1)
    bounds = []
    for y in range(K):
        onehot = F.one_hot(torch.full((len(x),), y), K).float()
        mu, logvar = model.posterior_net(torch.cat([feats, onehot], -1)).chunk(2, -1)
        z = mu + eps[y] * torch.exp(0.5 * logvar)
        logits = model.modalities["image"].decoder(torch.cat([z, onehot], -1)).flatten(1)
        rec = (pixels * logits - F.softplus(logits)).sum(-1)  # Bernoulli log-likelihood
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
        bounds.append(rec - model.config.beta * kl + math.log(1 / K))
    bounds = torch.stack(bounds, -1)  # [B,K]: L(x, y)
    pi = log_pi.exp()
    unlabelled = -((pi * bounds).sum(-1) - (pi * log_pi).sum(-1))
    y = batch.data["label"]
    labelled = -bounds.gather(1, y[:, None])[:, 0]
    ce = -log_pi.gather(1, y[:, None])[:, 0]
    return labelled, unlabelled, ce


def loss_and_noise(model, batch):
    """The model's loss at seed 0 and the noise [K,B,D] its one draw used."""
    torch.manual_seed(0)
    out = model.loss(batch)
    torch.manual_seed(0)
    return out, torch.randn(K, len(batch), model.config.latent_dim)


def test_unlabelled_term_matches_a_hand_computation(model, make_tensors):
    data = make_tensors(6)
    batch = Batch({"image": data["image"], "label": data["label"]}, {"label": torch.zeros(6, dtype=torch.bool)})
    out, eps = loss_and_noise(model, batch)
    _, unlabelled, _ = by_hand(model, batch, eps)
    torch.testing.assert_close(out.total, unlabelled.mean(), rtol=1e-5, atol=1e-4)
    assert out.terms["ce"] == 0 and out.terms["labelled"] == 0 and out.terms["entropy"] > 0


def test_labelled_loss_is_the_elbo_plus_alpha_cross_entropy(model, make_tensors):
    data = make_tensors(6)
    batch = Batch({"image": data["image"], "label": data["label"]})
    out, eps = loss_and_noise(model, batch)
    labelled, _, ce = by_hand(model, batch, eps)
    torch.testing.assert_close(out.total, labelled.mean() + 0.7 * ce.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.terms["ce"], ce.mean())
    # -L is the single-class ELBO: -(rec - beta * kl) + log K
    torch.testing.assert_close(out.total - 0.7 * out.terms["ce"],
                               -(out.terms["rec"] - 1.5 * out.terms["kl"]) + math.log(K), rtol=1e-5, atol=1e-4)


def test_a_mixed_batch_averages_each_examples_own_term(model, make_tensors):
    data = make_tensors(8)
    has_label = torch.tensor([True, False, False, True, False, False, True, False])
    has_image = torch.tensor([True] * 7 + [False])  # the last example has only a label: nothing to learn
    batch = Batch({"image": data["image"], "label": data["label"]}, {"label": has_label, "image": has_image})
    out, eps = loss_and_noise(model, batch)
    labelled, unlabelled, ce = by_hand(model, batch, eps)
    per_example = torch.where(has_label, labelled, unlabelled)[:7]
    torch.testing.assert_close(out.total, per_example.mean() + 0.7 * ce[has_label & has_image].mean(),
                               rtol=1e-5, atol=1e-4)
    assert out.terms["labelled"].item() == pytest.approx(3 / 7)


def train(model, batch, steps, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = model.loss(batch)
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    return losses


def test_a_few_steps_lower_the_loss(model, make_tensors):
    data = make_tensors(32, seed=1)
    mask = {"label": torch.arange(32) % 2 == 0}
    torch.manual_seed(0)
    losses = train(model, Batch({k: data[k] for k in model.names}, mask), 60)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2 * abs(np.mean(losses[:5]))


def test_the_classifier_trains_with_most_labels_missing(tiny_config, make_tensors):
    torch.manual_seed(0)
    m2 = build_model(tiny_config("m2", alpha=10.0))  # at 0.1 six labels anchor the classes slowly (0.56-0.98)
    data = make_tensors(96, seed=2)
    labels = np.zeros(96, dtype=bool)
    labels[balanced_rows(data["label"].numpy(), 6, seed=0)] = True  # 2 labels per class, 90 unlabelled
    batch = Batch({k: data[k] for k in m2.names}, {"label": torch.from_numpy(labels)})
    test = make_tensors(120, seed=3)
    before = (m2.classify({"image": test["image"]}).argmax(-1) == test["label"]).float().mean().item()
    torch.manual_seed(0)
    train(m2, batch, 150)
    probs = m2.classify({"image": test["image"]})
    after = (probs.argmax(-1) == test["label"]).float().mean().item()
    torch.testing.assert_close(probs.sum(-1), torch.ones(120))
    assert after >= 0.9 and after > before + 0.3, (before, after)


# -- the user API -------------------------------------------------------------------------------
def test_label_to_image_decodes_the_prior_mean_with_the_class(model, make_tensors):
    model.eval()
    y = make_tensors(5)["label"]
    out = model.generate({"label": y}, targets=["image"], mean=True, raw=True)["image"]
    code = torch.cat([torch.zeros(5, model.config.latent_dim), F.one_hot(y, K).float()], -1)
    torch.testing.assert_close(out, torch.sigmoid(model.modalities["image"].decoder(code)).view(5, 1, 8, 8))
    images = model.generate({"label": y}, targets=["image", "label"], n=4)
    assert images["image"].shape == (4, 5, 1, 8, 8) and torch.equal(images["label"], y.expand(4, -1))


def test_image_to_label_is_the_classifier(model, make_tensors):
    model.eval()
    x = make_tensors(40)["image"]
    probs = model.classify({"image": x})
    torch.testing.assert_close(probs, torch.softmax(model.classifier(x.float().div(255)), -1))
    assert torch.equal(model.generate({"image": x}, targets=["label"], mean=True)["label"], probs.argmax(-1))
    torch.manual_seed(0)
    drawn = model.generate({"image": x}, targets=["label"], n=200)["label"]  # [200,40]: y ~ q(y|x)
    freq = F.one_hot(drawn, K).float().mean(0)
    assert (freq - probs).abs().max() < 0.15
    missing = model.classify({"image": x}, mask={"image": [False] + [True] * 39})
    torch.testing.assert_close(missing[0], torch.full((K,), 1 / K))


def test_encode_is_the_class_mixture_mean(model, make_tensors):
    model.eval()
    data = {k: v for k, v in make_tensors(5).items() if k in model.names}
    x, y = data["image"], data["label"]
    q_x = model.modalities["image"].encode(x)
    feats = torch.cat([q_x.mu, q_x.logvar], -1)
    means = torch.stack([model.posterior_net(torch.cat([feats, F.one_hot(torch.full((5,), c), K).float()], -1))
                         .chunk(2, -1)[0] for c in range(K)], 1)  # [B,K,D]
    torch.testing.assert_close(model.encode(data), means[torch.arange(5), y])
    pi = model.classify({"image": x})
    torch.testing.assert_close(model.encode({"image": x}), (pi.unsqueeze(-1) * means).sum(1))
    torch.testing.assert_close(model.encode({"label": y}), torch.zeros(5, model.config.latent_dim))
    code = torch.cat([means[torch.arange(5), y], F.one_hot(y, K).float()], -1)
    rec = model.reconstruct(data)
    assert torch.equal(rec["label"], y)
    torch.testing.assert_close(rec["image"], torch.sigmoid(model.modalities["image"].decoder(code)).view(5, 1, 8, 8))


def test_samples_cover_the_classes_and_codes_need_the_class(model):
    model.eval()
    torch.manual_seed(0)
    out = model.sample(300)
    assert out["image"].shape == (300, 1, 8, 8) and set(out["label"].tolist()) == set(range(K))
    with pytest.raises(InputError, match="one-hot class"):
        model.decode(torch.zeros(2, model.config.latent_dim))
    with pytest.raises(InputError, match="'image'"):
        model.classify({"label": torch.tensor([0, 1])})


# -- config --------------------------------------------------------------------------------------
def test_label_defaults_to_the_categorical_modality(tiny_config):
    assert build_model(tiny_config("m2")).config.label == "label"
    assert build_model(tiny_config("m2", names=("label", "vector"))).x_name == "vector"


@pytest.mark.parametrize("names, options, pattern", [
    (("image", "label"), {"label": "image"}, "must be a categorical"),
    (("image", "label"), {"label": "caption"}, "not a modality"),
    (("image", "vector"), {}, "label must name"),
    (("image", "label", "vector"), {}, "exactly two modalities"),
    (("image", "label"), {"alpha": -1.0}, "alpha"),
    (("image", "label"), {"classifier_features": 7}, "even"),
])
def test_invalid_configs(tiny_config, names, options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(tiny_config("m2", names=names, **options))


# -- the data option `labelled` ------------------------------------------------------------------
def test_keep_labels_is_balanced_seeded_and_hides_the_rest(make_raw):
    raw = make_raw(90, names=("image", "label"))
    kept = keep_labels(raw, 10, seed=1)
    mask, values = kept.mask["label"], kept.modalities["label"]
    assert mask.sum() == 10 and (values[~mask] == -1).all()
    assert np.array_equal(values[mask], raw.modalities["label"][mask])
    assert sorted(np.bincount(values[mask], minlength=K)) == [3, 3, 4]
    assert kept.mask["image"].all() and raw.mask["label"].all()  # the input is left as it was
    assert np.array_equal(keep_labels(raw, 10, seed=1).mask["label"], mask)
    assert not np.array_equal(keep_labels(raw, 10, seed=2).mask["label"], mask)
    with pytest.raises(InputError, match="only 90"):
        keep_labels(raw, 91)
    with pytest.raises(InputError, match="not a categorical"):
        keep_labels(raw, 5, "image")


def test_balanced_rows_fill_up_from_other_classes_when_one_runs_out():
    labels = np.array([0] * 2 + [1] * 20 + [2] * 20)
    rows = balanced_rows(labels, 12, seed=0)
    assert len(set(rows)) == 12 and sorted(np.bincount(labels[rows])) == [2, 5, 5]


def test_the_data_config_thins_out_the_training_split_only(make_raw):
    raw = make_raw(200, names=("image", "label"))
    config = RunConfig.from_dict({"data": {"labelled": 9, "split_seed": 3}, "train": {"val_fraction": 0.1}})
    splits = split_data(raw, config)
    assert splits.train.mask["label"].sum() == 9
    assert splits.val.mask["label"].all() and splits.test.mask["label"].all()
    with pytest.raises(ConfigError, match="labelled"):
        RunConfig.from_dict({"data": {"labelled": 0}})
