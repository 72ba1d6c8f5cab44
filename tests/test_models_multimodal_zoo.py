"""The multimodal model zoo (jmvae, mvtcae, mmvae_plus, cvae): objectives checked against
direct implementations of their formulas, training on a tiny batch, missing modalities,
the user API, save/load and configuration errors. Tiny data: 1x8x8 images, 4-class
labels and 4-d vectors from the shared conftest builders."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import omnivae.models.cvae  # noqa: F401  (registers the models until models/__init__ imports them)
import omnivae.models.jmvae  # noqa: F401
import omnivae.models.mmvae_plus  # noqa: F401
import omnivae.models.mvtcae  # noqa: F401
from omnivae import Batch, ConfigError, InputError
from omnivae.io import load_model, save_model
from omnivae.models import MODELS, build_model
from omnivae.models.cvae import CVAE
from omnivae.models.jmvae import JMVAE
from omnivae.models.mmvae_plus import MMVAEPlus
from omnivae.models.mvtcae import MVTCAE

CLASSES, LATENT, PRIVATE = 4, 4, 3
SPECS = {
    "image": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp", "hidden": [32]},
    "label": {"kind": "categorical", "num_classes": CLASSES, "hidden": [16]},
    "vector": {"kind": "vector", "dim": 4, "hidden": [16]},
}
CASES = [
    pytest.param("jmvae", {}, id="jmvae"),
    pytest.param("mvtcae", {}, id="mvtcae"),
    pytest.param("mmvae_plus", {"private_dim": PRIVATE}, id="mmvae_plus-elbo"),
    pytest.param("mmvae_plus", {"private_dim": PRIVATE, "estimator": "iwae", "k": 3}, id="mmvae_plus-iwae-k3"),
    pytest.param("mmvae_plus", {"private_dim": PRIVATE, "estimator": "dreg", "k": 3}, id="mmvae_plus-dreg-k3"),
    pytest.param("cvae", {"target": "image"}, id="cvae"),
]


def config(name: str, names=("image", "label"), **options) -> dict:
    return {"model": name, "latent_dim": LATENT, "modalities": {n: dict(SPECS[n]) for n in names}, **options}


def make(name: str, options=None, names=("image", "label"), seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(config(name, names, **{**(options or {}), **extra}))


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster, and on a busy machine far
    faster, than several threads waiting on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(make_tensors):
    return make_tensors(16, 0, num_classes=CLASSES)


def batch_of(model, data, mask=None) -> Batch:
    return Batch({k: data[k] for k in model.names}, dict(mask or {}))


def pick(data, names, n=None):
    return {k: data[k][:n] for k in names}


def at_seed(model, batch, seed=0, beta_scale=1.0):
    torch.manual_seed(seed)
    return model.loss(batch, beta_scale)


def normal(mu, logvar) -> Normal:
    return Normal(mu, torch.exp(0.5 * logvar))


# -- building and the objective's basics -------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("jmvae", JMVAE), ("mvtcae", MVTCAE), ("mmvae_plus", MMVAEPlus), ("cvae", CVAE)])
def test_builds_from_a_dict_and_config_round_trips(name, cls):
    assert MODELS[name] is cls
    model = make(name)
    assert type(model) is cls
    again = build_model(model.config.to_dict())
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, options", CASES)
def test_loss_is_finite_scalar_with_detached_terms(data, name, options):
    model = make(name, options)
    out = at_seed(model, batch_of(model, data))
    assert out.total.dim() == 0 and torch.isfinite(out.total) and out.total.requires_grad
    assert {"loss", "rec", "kl"} <= set(out.terms)
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.terms.values())
    assert out.terms["loss"].item() == pytest.approx(out.total.item())
    if options.get("estimator", "elbo") == "elbo" and name in ("mmvae_plus", "cvae"):
        want = -(out.terms["rec"] - out.terms["kl"])  # beta = 1
        assert out.total.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name, options", CASES)
def test_loss_decreases_on_a_fixed_batch(data, name, options):
    model = make(name, options)
    batch = batch_of(model, data)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        out = model.loss(batch)
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert math.isfinite(last) and last < first - 0.2 * abs(first), (first, last)


@pytest.mark.parametrize("name, options", CASES)
def test_gradients_reach_every_network_the_objective_uses(data, name, options):
    model = make(name, options)
    at_seed(model, batch_of(model, data)).total.backward()
    for mod_name, mod in model.modalities.items():
        parts = ["encoder"] if name == "cvae" and mod_name != model.config.target else ["encoder", "decoder"]
        for part in parts:
            for pname, p in getattr(mod, part).named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{mod_name}.{part}.{pname}"
    extra = {"jmvae": "joint_encoder", "cvae": "posterior_net", "mmvae_plus": None, "mvtcae": None}[name]
    if extra:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, extra).parameters())
    if name == "mmvae_plus":
        assert model.private_log_scale.grad is not None and model.private_log_scale.grad.abs().sum() > 0


# -- missing modalities ---------------------------------------------------------------------------------
PARTIAL = {"image": torch.tensor([True, False, True, True] * 4), "label": torch.tensor([True, True, False, True] * 4)}


@pytest.mark.parametrize("name, options", CASES)
def test_missing_entries_give_finite_loss_independent_of_placeholders(data, name, options):
    model = make(name, options)
    batch = batch_of(model, data, PARTIAL)
    a = at_seed(model, batch)
    assert torch.isfinite(a.total)
    changed = {k: v.clone() for k, v in batch.data.items()}
    gone = ~PARTIAL["image"]
    changed["image"][gone] = torch.randint(0, 256, changed["image"][gone].shape, dtype=torch.uint8)
    changed["label"][~PARTIAL["label"]] = (changed["label"][~PARTIAL["label"]] + 1) % CLASSES
    b = at_seed(model, Batch(changed, PARTIAL))
    assert b.total.item() == pytest.approx(a.total.item(), rel=1e-6, abs=1e-5)
    changed["image"][0] = 255 - changed["image"][0]  # a present entry does change it
    assert at_seed(model, Batch(changed, PARTIAL)).total.item() != pytest.approx(a.total.item(), rel=1e-6)


@pytest.mark.parametrize("name, options", CASES)
def test_example_with_no_modality_gives_finite_loss_and_gradients(data, name, options):
    model = make(name, options)
    nothing = torch.tensor([True] * 15 + [False])
    out = at_seed(model, batch_of(model, data, {"image": nothing, "label": nothing}))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    none = {n: torch.zeros(16, dtype=torch.bool) for n in model.names}
    empty = at_seed(model, batch_of(model, data, none))
    assert empty.total.item() == 0.0  # nothing to learn from


# -- user API ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [c for c in CASES if c.values[0] != "cvae"])
def test_encode_generate_sample_reconstruct_shapes(data, name, options):
    model = make(name, options).eval()
    x = pick(data, model.names, 5)
    assert model.encode(x).shape == (5, LATENT)
    assert model.encode(x, sample=True).shape == (5, LATENT)
    assert model.encode({"image": x["image"]}).shape == (5, LATENT)
    assert model.encode(x, given=["label"]).shape == (5, LATENT)
    out = model.generate(x, n=3)
    assert out["image"].shape == (3, 5, 1, 8, 8) and 0 <= out["image"].min() and out["image"].max() <= 1
    assert out["label"].shape == (3, 5) and out["label"].dtype == torch.long
    assert model.generate(x, given=["label"], targets=["image"], n=2)["image"].shape == (2, 5, 1, 8, 8)
    assert model.generate({"label": x["label"]}, targets=["image"])["image"].shape == (5, 1, 8, 8)
    mean = model.generate(x, n=2, mean=True)["image"]
    torch.testing.assert_close(mean[0], mean[1])
    torch.testing.assert_close(mean, model.generate(x, n=2, mean=True)["image"])
    samples = model.sample(7)
    assert samples["image"].shape == (7, 1, 8, 8) and samples["label"].shape == (7,)
    assert model.sample(1, targets=["label"])["label"].shape == (1,)
    rec = model.reconstruct(x)
    assert rec["image"].shape == (5, 1, 8, 8) and rec["label"].shape == (5,)
    raw = model.generate(x, raw=True, mean=True)
    assert isinstance(raw["image"], torch.Tensor) and raw["image"].shape == (5, 1, 8, 8)


@pytest.mark.parametrize("name, options", CASES)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, data, name, options):
    model = make(name, options).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    x = pick(data, model.names, 6)
    assert torch.equal(model.encode(x), loaded.encode(x))
    assert torch.equal(model.encode(x, given=["label"]), loaded.encode(x, given=["label"]))
    given = ["label"]
    a = model.generate(x, given=given, targets=["image"], mean=True, raw=True)["image"]
    assert torch.equal(a, loaded.generate(x, given=given, targets=["image"], mean=True, raw=True)["image"])


# -- JMVAE --------------------------------------------------------------------------------------------
def test_jmvae_objective_matches_formula(data):
    model = make("jmvae", alpha=0.5, beta=1.5)
    batch = batch_of(model, data)
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


def test_jmvae_uses_only_complete_examples(data):
    model = make("jmvae")
    batch = batch_of(model, data, PARTIAL)
    out = at_seed(model, batch)
    complete = PARTIAL["image"] & PARTIAL["label"]
    assert out.terms["complete"].item() == pytest.approx(complete.float().mean().item())
    changed = {k: v.clone() for k, v in batch.data.items()}
    changed["image"][~complete] = 255 - changed["image"][~complete]  # present in some incomplete rows
    assert at_seed(model, Batch(changed, PARTIAL)).total.item() == pytest.approx(out.total.item(), rel=1e-6)


def test_jmvae_fuses_with_the_joint_encoder_or_the_given_posteriors(data):
    model = make("jmvae").eval()
    x = pick(data, model.names, 5)
    batch = model.as_batch(x)
    mu, logvar, _ = model.encode_unimodal(batch)
    torch.testing.assert_close(model.encode(x), model.joint_posterior(batch).mu)
    torch.testing.assert_close(model.encode(x, given=["image"]), mu[0])  # a single posterior as it is
    mixed = model.encode(x, mask={"label": torch.tensor([True, False, True, True, True])})
    torch.testing.assert_close(mixed[1], mu[0, 1])
    torch.testing.assert_close(mixed[0], model.joint_posterior(batch).mu[0])


def test_jmvae_needs_two_modalities():
    with pytest.raises(ConfigError, match="at least two"):
        make("jmvae", names=("image",))
    with pytest.raises(ConfigError, match="alpha"):
        make("jmvae", alpha=-1.0)


# -- MVTCAE -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 5 / 6, 1.0])
def test_mvtcae_objective_matches_formula(make_tensors, alpha):
    names = ("image", "label", "vector")
    model = make("mvtcae", names=names, alpha=alpha, beta=2.0, rescale="none")  # the formula uses weight 1
    data = make_tensors(16, 1, num_classes=CLASSES)
    mask = {"image": torch.tensor([1, 1, 0, 1] * 4).bool(), "label": torch.tensor([1, 0, 1, 1] * 4).bool()}
    batch = batch_of(model, data, mask)
    out = at_seed(model, batch, seed=2)
    mu, logvar, present = model.encode_unimodal(batch)
    p = present.float().unsqueeze(-1)
    precision = (p * torch.exp(-logvar)).sum(0)
    q_mu, q_logvar = (p * torch.exp(-logvar) * mu).sum(0) / precision, -torch.log(precision)
    torch.manual_seed(2)
    z = q_mu + torch.randn(1, *q_mu.shape) * torch.exp(0.5 * q_logvar)
    rec = sum(model.modalities[n].log_likelihood(z, batch.data[n])[0] * present[i] for i, n in enumerate(names))
    q = normal(q_mu, q_logvar)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    kl_uni = sum(kl_divergence(q, normal(mu[i], logvar[i])).sum(-1) * present[i] for i in range(3))
    m = present.sum(0).float()
    objective = (m - alpha) / m * rec - 2.0 * ((1 - alpha) * kl + alpha / m * kl_uni)
    assert out.total.item() == pytest.approx(-objective.mean().item(), rel=1e-5)


def test_mvtcae_with_alpha_zero_is_a_poe_vae(data):
    model = make("mvtcae", alpha=0.0, beta=1.5)
    out = at_seed(model, batch_of(model, data))
    assert out.total.item() == pytest.approx(-(out.terms["rec"] - 1.5 * out.terms["kl"]).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="alpha"):
        make("mvtcae", alpha=1.5)


# -- MMVAE+ -------------------------------------------------------------------------------------------
def test_mmvae_plus_codes_are_shared_plus_private(data):
    model = make("mmvae_plus", private_dim=PRIVATE).eval()
    x = pick(data, model.names, 5)
    assert MMVAEPlus.modality_latent_dim(model.config) == LATENT + PRIVATE
    assert model.modalities["image"].encode(x["image"].float() / 255).mu.shape == (5, LATENT + PRIVATE)
    assert model.encode(x).shape == (5, LATENT)
    full = torch.randn(2, 5, LATENT + PRIVATE)
    assert model.decode(full, ["image"])["image"].shape == (2, 5, 1, 8, 8)
    torch.testing.assert_close(model.decode(full, ["image"], raw=True)["image"],
                               model.decode(full, ["image"], raw=True)["image"])  # full codes: no draws
    with pytest.raises(InputError, match="shared codes of size"):
        model.decode(torch.randn(5, LATENT + 1))


def test_mmvae_plus_cross_generation_varies_private_draws_with_a_fixed_shared_code(data):
    model = make("mmvae_plus", private_dim=PRIVATE).eval()
    x = pick(data, model.names, 5)
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
def test_mmvae_plus_objective_matches_formula(data, estimator):
    k, beta, d = 2, 1.5, LATENT
    model = make("mmvae_plus", private_dim=PRIVATE, private_prior_scale=2.0, k=k, beta=beta, estimator=estimator,
                 rescale="none")  # the formula uses weight 1
    batch = batch_of(model, data)
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


def test_mmvae_plus_fixed_private_prior_and_three_modalities(make_tensors):
    names = ("image", "label", "vector")
    model = make("mmvae_plus", names=names, private_dim=2, learn_private_prior=False)
    assert not model.private_log_scale.requires_grad
    data = make_tensors(8, 0, num_classes=CLASSES)
    out = at_seed(model, batch_of(model, data, {"vector": torch.tensor([True, False] * 4)}))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert model.private_log_scale.grad is None
    model.eval()
    x = pick(data, names, 3)
    assert model.generate(x, given=["vector"], n=2)["label"].shape == (2, 3)
    assert model.reconstruct(x)["vector"].shape == (3, 4)


# -- CVAE -------------------------------------------------------------------------------------------
def test_cvae_config_defaults_are_written_out():
    model = make("cvae")
    cfg = model.config
    assert (cfg.target, cfg.conditions, cfg.condition_dim) == ("image", ["label"], LATENT)
    saved = cfg.to_dict()
    assert saved["target"] == "image" and saved["conditions"] == ["label"] and saved["condition_dim"] == LATENT
    three = make("cvae", names=("image", "label", "vector"), target="label", condition_dim=2)
    assert three.config.conditions == ["image", "vector"]
    assert CVAE.modality_latent_dim(three.config) == LATENT + 2


@pytest.mark.parametrize("options, message", [
    ({"target": "audio"}, "target 'audio' is not a modality"),
    ({"target": "image", "conditions": ["sound"]}, "not modalities of this model"),
    ({"target": "image", "conditions": ["image", "label"]}, "cannot also be a condition"),
    ({"target": "image", "conditions": []}, "at least one modality"),
    ({"condition_dim": 0}, "condition_dim"),
])
def test_cvae_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        make("cvae", **options)


def test_cvae_objective_matches_formula(data):
    model = make("cvae", beta=1.5)
    batch = batch_of(model, data)
    out = at_seed(model, batch, seed=6)
    mu, logvar, _ = model.encode_unimodal(batch)
    c = mu[1, :, LATENT:]  # the one condition's embedding half
    h = model.posterior_net(torch.cat([mu[0], logvar[0], c], -1))
    q_mu, q_logvar = h.chunk(2, -1)
    torch.manual_seed(6)
    z = q_mu + torch.randn(1, *q_mu.shape) * torch.exp(0.5 * q_logvar)
    rec = model.modalities["image"].log_likelihood(torch.cat([z, c[None]], -1), batch.data["image"])[0]
    kl = kl_divergence(normal(q_mu, q_logvar), Normal(0.0, 1.0)).sum(-1)
    assert out.total.item() == pytest.approx(-(rec - 1.5 * kl).mean().item(), rel=1e-5)


def test_cvae_user_api(data):
    model = make("cvae").eval()
    x = pick(data, model.names, 5)
    assert model.encode(x).shape == (5, LATENT)
    assert torch.equal(model.encode(x, given=["label"]), torch.zeros(5, LATENT))  # no target: prior mean
    out = model.generate(x, given=["label"], n=3)
    assert set(out) == {"image"} and out["image"].shape == (3, 5, 1, 8, 8)
    one = model.generate({"label": x["label"]}, targets=["image"])["image"]
    assert one.shape == (5, 1, 8, 8) and 0 <= one.min() and one.max() <= 1
    mean = model.generate(x, given=["label"], n=2, mean=True, raw=True)["image"]
    torch.testing.assert_close(mean[0], mean[1])
    other = {"label": (x["label"] + 1) % CLASSES}
    assert not torch.allclose(mean[0], model.generate(other, mean=True, raw=True)["image"])  # c matters
    assert set(model.reconstruct(x)) == {"image"} and model.reconstruct(x)["image"].shape == (5, 1, 8, 8)


def test_cvae_generation_errors(data):
    model = make("cvae").eval()
    x = pick(data, model.names, 5)
    with pytest.raises(InputError, match=r"misses \['label'\]"):
        model.generate(x, given=["image"], targets=["image"])
    with pytest.raises(InputError, match=r"misses \['label'\]"):
        model.generate({"image": x["image"]})
    with pytest.raises(InputError, match="only generates its target 'image'"):
        model.generate(x, given=["label"], targets=["label"])
    with pytest.raises(InputError, match="no unconditional samples"):
        model.sample(3)
    with pytest.raises(InputError, match="condition embedding"):
        model.decode(torch.randn(5, LATENT))
    with pytest.raises(InputError, match="needs its target"):
        model.loss(Batch({"label": x["label"]}))


def test_cvae_with_two_conditions_and_detached_embedding(make_tensors):
    names = ("image", "label", "vector")
    model = make("cvae", names=names, detach_condition=True)
    data = make_tensors(8, 0, num_classes=CLASSES)
    batch = batch_of(model, data, {"vector": torch.tensor([True, False] * 4)})
    out = at_seed(model, batch)
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.modalities["label"].encoder.parameters())  # c detached
    assert model.modalities["image"].encoder[1][0].weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match=r"misses \['vector'\]"):
        model.eval().generate(pick(data, names, 3), given=["label"])


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", [{"model": "jmvae"}, {"model": "mvtcae"},
                                   {"model": "mmvae_plus", "private_dim": 2}, {"model": "cvae", "target": "image"}],
                         ids=lambda m: m["model"])
def test_trains_on_image_and_caption_data_and_generates_from_text(tmp_path, model):
    from omnivae.run import train_run

    config = {"data": {"source": "shapes", "options": {"n": 64, "image_size": 16}},
              "model": {**model, "latent_dim": 4},
              "train": {"max_epochs": 1, "batch_size": 16, "progress": False, "tensorboard": False,
                        "num_threads": 1}}
    train_run(config, tmp_path / "run")
    loaded = load_model(tmp_path / "run" / "model")
    out = loaded.generate({"text": ["a red circle", "a blue square"]}, given=["text"], targets=["image"], n=2)
    assert out["image"].shape == (2, 2, 3, 16, 16)
    if model["model"] != "cvae":
        captions = loaded.generate({"image": out["image"][0]}, given=["image"], targets=["text"], mean=True)["text"]
        assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
