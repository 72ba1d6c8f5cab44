"""Model families (vae, mvae, mmvae with its estimators, mopoe): objectives checked
against direct implementations of their formulas, training, gradients, missing
modalities, the user API and configuration errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from omnivae import Batch, ConfigError, InputError, build_model
from omnivae.models import model_config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL_CASES = [
    pytest.param("vae", {}, id="vae"),
    pytest.param("mvae", {}, id="mvae"),
    pytest.param("mmvae", {"estimator": "elbo", "k": 3}, id="mmvae-elbo-k3"),
    pytest.param("mmvae", {"estimator": "iwae", "k": 3}, id="mmvae-iwae-k3"),
    pytest.param("mmvae", {"estimator": "dreg", "k": 3}, id="mmvae-dreg-k3"),
    pytest.param("mopoe", {}, id="mopoe"),
    pytest.param("mopoe", {"prior_expert": True}, id="mopoe-prior"),
]


@pytest.fixture
def make_model(tiny_config):
    def build(name, options=None, names=None, seed=0, **config):
        names = names or (("image",) if name == "vae" else ("image", "label"))
        torch.manual_seed(seed)
        return build_model(tiny_config(name, names, **{**(options or {}), **config}))
    return build


@pytest.fixture
def batch_for(make_tensors):
    def build(model, n=16, seed=0, mask=None):
        data = make_tensors(n, seed)
        return Batch({k: data[k] for k in model.names}, dict(mask or {}))
    return build


def pick(data, names):
    return {k: data[k] for k in names}


def loss_at_seed(model, batch, seed=0, beta_scale=1.0):
    torch.manual_seed(seed)
    return model.loss(batch, beta_scale)


# -- objectives -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_loss_is_finite_scalar_with_terms(make_model, batch_for, name, options):
    model = make_model(name, options)
    out = loss_at_seed(model, batch_for(model))
    assert out.total.dim() == 0 and torch.isfinite(out.total) and out.total.requires_grad
    assert {"loss", "rec", "kl"} <= set(out.terms)
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.terms.values())
    assert out.terms["loss"].item() == pytest.approx(out.total.item())
    assert model(batch_for(model)).total.dim() == 0  # forward is the loss


ELBO_CASES = [c for c in MODEL_CASES if c.values[1].get("estimator") not in ("iwae", "dreg")]


@pytest.mark.parametrize("name, options", ELBO_CASES)
def test_beta_scale_weights_the_kl_term(make_model, batch_for, name, options):
    model = make_model(name, options, beta=2.0)
    batch = batch_for(model)
    for scale in (0.0, 0.5, 1.0):
        out = loss_at_seed(model, batch, beta_scale=scale)
        want = -(out.terms["rec"] - 2.0 * scale * out.terms["kl"])
        assert out.total.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-4)
    assert loss_at_seed(model, batch, beta_scale=0.0).terms["kl"] > 0


def test_vae_loss_matches_formula(make_model, batch_for):
    model = make_model("vae", beta=1.5)
    batch = batch_for(model)
    out = loss_at_seed(model, batch, seed=3)
    x = batch.data["image"]
    torch.manual_seed(3)
    q = model.modalities["image"].encode(x)
    z = q.mu + torch.randn(1, *q.mu.shape) * torch.exp(0.5 * q.logvar)
    logits = model.modalities["image"].decoder(z[0])
    rec = -F.binary_cross_entropy_with_logits(logits, x.flatten(1).float() / 255, reduction="none").sum(-1)
    kl = kl_divergence(Normal(q.mu, torch.exp(0.5 * q.logvar)), Normal(0.0, 1.0)).sum(-1)
    want = -(rec.mean() - 1.5 * kl.mean())
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)


def poe_with_prior(mus, logvars):
    precision = 1.0 + sum(torch.exp(-lv) for lv in logvars)
    mean = sum(m * torch.exp(-lv) for m, lv in zip(mus, logvars)) / precision
    return Normal(mean, precision.rsqrt())


def kl_std(dist):
    return kl_divergence(dist, Normal(0.0, 1.0)).sum(-1)


def test_mvae_kl_term_is_sum_over_joint_and_unimodal_subsets(make_model, batch_for):
    model = make_model("mvae")
    batch = batch_for(model)
    out = loss_at_seed(model, batch)
    qs = [model.modalities[n].encode(batch.data[n]) for n in model.names]
    joint = poe_with_prior([q.mu for q in qs], [q.logvar for q in qs])
    singles = [poe_with_prior([q.mu], [q.logvar]) for q in qs]
    want = (kl_std(joint) + sum(kl_std(s) for s in singles)).mean()
    assert out.terms["kl"].item() == pytest.approx(want.item(), rel=1e-5)


def test_mopoe_kl_term_averages_valid_subsets(make_model, batch_for):
    model = make_model("mopoe")
    mask = {"label": torch.tensor([True, False] * 8)}
    batch = batch_for(model, mask=mask)
    out = loss_at_seed(model, batch)
    qi, ql = (model.modalities[n].encode(batch.data[n]) for n in ("image", "label"))

    def product(qs):  # no prior expert
        precision = sum(torch.exp(-q.logvar) for q in qs)
        return Normal(sum(q.mu * torch.exp(-q.logvar) for q in qs) / precision, precision.rsqrt())
    k_img, k_lab, k_both = kl_std(Normal(qi.mu, qi.std)), kl_std(Normal(ql.mu, ql.std)), kl_std(product([qi, ql]))
    has_label = mask["label"]
    # label present: subsets {image}, {label}, {image,label}; label missing: {image} and
    # {image,label} (which reduces to the image expert) are valid, {label} is not
    want = torch.where(has_label, (k_img + k_lab + k_both) / 3, k_img).mean()
    assert out.terms["kl"].item() == pytest.approx(want.item(), rel=1e-5)


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
def test_mmvae_objective_matches_formula(make_model, batch_for, estimator):
    model = make_model("mmvae", {"estimator": estimator, "k": 4}, rescale="none")  # the formula uses weight 1
    batch = batch_for(model)
    out = loss_at_seed(model, batch, seed=5)
    log_w = mmvae_log_w(model, batch, seed=5)
    per_m = log_w.mean(1) if estimator == "elbo" else torch.logsumexp(log_w, 1) - math.log(4)
    assert out.total.item() == pytest.approx(-per_m.mean().item(), rel=1e-5)


def test_mmvae_iwae_bound_is_tighter_than_elbo_on_the_same_draws(make_model, batch_for):
    elbo = make_model("mmvae", {"estimator": "elbo", "k": 8})
    iwae = make_model("mmvae", {"estimator": "iwae", "k": 8})
    iwae.load_state_dict(elbo.state_dict())
    batch = batch_for(elbo)
    assert loss_at_seed(iwae, batch).total < loss_at_seed(elbo, batch).total
    one_e = make_model("mmvae", {"estimator": "elbo", "k": 1})
    one_i = make_model("mmvae", {"estimator": "iwae", "k": 1})
    one_i.load_state_dict(one_e.state_dict())
    assert loss_at_seed(one_i, batch).total.item() == pytest.approx(loss_at_seed(one_e, batch).total.item())


def test_mmvae_dreg_gradients_match_doubly_reparameterised_formula(make_model, batch_for):
    model = make_model("mmvae", {"estimator": "dreg", "k": 4}, rescale="none")
    batch = batch_for(model, n=8)
    model.zero_grad()
    loss_at_seed(model, batch, seed=7).total.backward()
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


def test_mmvae_dreg_reports_the_iwae_bound(make_model, batch_for):
    dreg = make_model("mmvae", {"estimator": "dreg", "k": 6})
    iwae = make_model("mmvae", {"estimator": "iwae", "k": 6})
    iwae.load_state_dict(dreg.state_dict())
    batch = batch_for(dreg)
    assert loss_at_seed(dreg, batch).total.item() == pytest.approx(loss_at_seed(iwae, batch).total.item(), rel=1e-5)


# -- training and gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_loss_decreases_on_a_fixed_batch(make_model, batch_for, name, options):
    model = make_model(name, options)
    batch = batch_for(model)
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


@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_gradients_reach_every_encoder_and_decoder(make_model, batch_for, name, options):
    model = make_model(name, options)
    loss_at_seed(model, batch_for(model)).total.backward()
    for mod_name, mod in model.modalities.items():
        for part in ("encoder", "decoder"):
            for pname, p in getattr(mod, part).named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{mod_name}.{part}.{pname}"


def partial_mask(model):
    m = {"image": torch.tensor([True, False, True, True] * 4)}
    if "label" in model.names:
        m["label"] = torch.tensor([True, True, False, True] * 4)
    return m


@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_missing_entries_give_finite_loss_independent_of_placeholders(make_model, batch_for, name, options):
    model = make_model(name, options)
    mask = partial_mask(model)
    batch = batch_for(model, mask=mask)
    a = loss_at_seed(model, batch)
    assert torch.isfinite(a.total)
    changed = {k: v.clone() for k, v in batch.data.items()}
    gone = ~mask["image"]
    changed["image"][gone] = torch.randint(0, 256, changed["image"][gone].shape, dtype=torch.uint8)
    if "label" in changed:
        changed["label"][~mask["label"]] = (changed["label"][~mask["label"]] + 1) % 3
    b = loss_at_seed(model, Batch(changed, mask))
    assert b.total.item() == pytest.approx(a.total.item(), rel=1e-6, abs=1e-5)
    # ... while changing a present entry does change it (the check above can fail)
    changed["image"][0] = 255 - changed["image"][0]
    assert loss_at_seed(model, Batch(changed, mask)).total.item() != pytest.approx(a.total.item(), rel=1e-6)


@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_all_true_mask_equals_no_mask(make_model, batch_for, name, options):
    model = make_model(name, options)
    full = {n: torch.ones(16, dtype=torch.bool) for n in model.names}
    a, b = loss_at_seed(model, batch_for(model)), loss_at_seed(model, batch_for(model, mask=full))
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)


@pytest.mark.parametrize("name, options", [c for c in MODEL_CASES if c.values[0] != "vae"])
def test_example_with_no_modality_gives_finite_loss(make_model, batch_for, name, options):
    model = make_model(name, options)
    nothing = torch.tensor([True] * 15 + [False])  # the last example has no modality at all
    batch = batch_for(model, mask={"image": nothing, "label": nothing})
    out = loss_at_seed(model, batch)
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -- user API ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_encode_generate_sample_reconstruct_shapes(make_model, make_tensors, name, options):
    model = make_model(name, options).eval()
    data = pick(make_tensors(5), model.names)
    assert model.encode(data).shape == (5, 4)
    assert model.encode(data, sample=True).shape == (5, 4)
    assert model.encode(data, given=["image"]).shape == (5, 4)
    out = model.generate(data, n=3)
    assert set(out) == set(model.names)
    assert out["image"].shape == (3, 5, 1, 8, 8) and 0 <= out["image"].min() and out["image"].max() <= 1
    if "label" in model.names:
        assert out["label"].shape == (3, 5) and out["label"].dtype == torch.long
        assert model.generate(data, given=["label"], targets=["image"], n=2)["image"].shape == (2, 5, 1, 8, 8)
    assert model.generate(data)["image"].shape == (5, 1, 8, 8)  # n=1: no leading n dim
    mean = model.generate(data, n=2, mean=True)["image"]
    torch.testing.assert_close(mean[0], mean[1])  # the same code decoded twice
    torch.testing.assert_close(mean, model.generate(data, n=2, mean=True)["image"])
    samples = model.sample(7)
    assert samples["image"].shape == (7, 1, 8, 8)
    if "label" in model.names:
        assert samples["label"].shape == (7,)
    rec = model.reconstruct(data)
    assert rec["image"].shape == (5, 1, 8, 8)
    raw = model.generate(data, raw=True, mean=True)
    assert isinstance(raw["image"], torch.Tensor) and raw["image"].shape == (5, 1, 8, 8)


def test_mean_generation_decodes_the_posterior_mean(make_model, make_tensors):
    model = make_model("mvae").eval()
    data = pick(make_tensors(4), model.names)
    z = model.encode(data, given=["label"])
    got = model.generate(data, given=["label"], targets=["image"], mean=True)["image"]
    want = torch.sigmoid(model.modalities["image"].decoder(z)).view(4, 1, 8, 8)
    torch.testing.assert_close(got, want)


def test_class_names_come_back_as_strings(tiny_config, make_tensors):
    cfg = tiny_config("mopoe")
    cfg["modalities"]["label"]["classes"] = ["zero", "one", "two"]
    model = build_model(cfg).eval()
    out = model.generate({"label": ["two", "one"]}, targets=["label"], n=2)
    assert len(out["label"]) == 2 and all(set(row) <= {"zero", "one", "two"} for row in out["label"])
    assert all(isinstance(s, str) for s in model.sample(3)["label"])


def test_modality_weight_scales_its_log_likelihood(tiny_config, make_tensors):
    cfg = tiny_config("mvae", rescale="none")
    torch.manual_seed(0)
    plain = build_model(cfg)
    cfg["modalities"]["label"]["weight"] = 2.5
    heavy = build_model(cfg)
    heavy.load_state_dict(plain.state_dict())
    data = pick(make_tensors(6), plain.names)
    mask = {"label": torch.tensor([True, False] * 3)}
    z = torch.randn(2, 6, 4)
    a = plain.log_likelihoods(z, Batch(data, mask))
    b = heavy.log_likelihoods(z, Batch(data, mask))
    torch.testing.assert_close(b["label"], 2.5 * a["label"])
    torch.testing.assert_close(a["image"], b["image"])
    direct = plain.modalities["label"].log_likelihood(z, data["label"]) * mask["label"]
    torch.testing.assert_close(a["label"], direct)


def test_api_input_errors(make_model, make_tensors):
    model = make_model("mvae").eval()
    data = pick(make_tensors(4), model.names)
    with pytest.raises(InputError, match="'audio'"):
        model.generate(data, given=["audio"])
    with pytest.raises(InputError, match="'audio'"):
        model.generate(data, targets=["audio"])
    with pytest.raises(InputError, match="'audio'"):
        model.sample(2, targets=["audio"])
    with pytest.raises(InputError, match="'label'"):
        model.encode({"image": data["image"]}, given=["label"])  # named, but not in the batch
    with pytest.raises(InputError, match="'audio'"):
        model.encode({**data, "audio": data["label"]})
    with pytest.raises(InputError, match="n must be"):
        model.generate(data, n=0)
    with pytest.raises(InputError, match="n must be"):
        model.sample(0)
    with pytest.raises(InputError, match="batch sizes"):
        model.encode({"image": data["image"], "label": data["label"][:3]})
    with pytest.raises(InputError, match=r"mask of 'label'.*\[4\]"):
        model.encode(data, mask={"label": [True, False]})
    with pytest.raises(InputError, match="'image'"):
        model.encode({"image": data["image"].float()})  # 0..255 floats are out of range
    with pytest.raises(InputError):
        model.encode({})


def test_mask_for_modality_missing_from_batch_is_an_input_error(make_model, make_tensors):
    model = make_model("mvae").eval()
    with pytest.raises(InputError, match="'label'"):
        model.encode({"image": make_tensors(4)["image"]}, mask={"label": [True] * 4})


# -- configuration ---------------------------------------------------------------------------------------------
def test_vae_with_two_modalities_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="exactly one modality"):
        build_model(tiny_config("vae", ("image", "label")))


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(latnt_dim=3), "latnt_dim"),
    (lambda c: c.update(k=4), "k"),  # an mmvae option on mvae
    (lambda c: c["modalities"]["image"].update(chanels=[8]), "chanels"),
    (lambda c: c["modalities"]["label"].update(num_clases=3), "num_clases"),
])
def test_unknown_config_key_is_named(tiny_config, change, key):
    cfg = tiny_config("mvae")
    change(cfg)
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    assert key in str(info.value) and "unknown key" in str(info.value)


@pytest.mark.parametrize("change, pattern", [
    (lambda c: c.update(model="gan"), "unknown model 'gan'"),
    (lambda c: c.pop("model"), "'model' key"),
    (lambda c: c.update(latent_dim=0), "latent_dim"),
    (lambda c: c.update(modalities={}), "at least one modality"),
    (lambda c: c.update(model="mmvae", estimator="vimco"), "estimator"),
    (lambda c: c["modalities"]["image"].update(kind="audio"), "unknown kind 'audio'"),
])
def test_invalid_configs(tiny_config, change, pattern):
    cfg = tiny_config("mvae")
    change(cfg)
    with pytest.raises(ConfigError, match=pattern):
        build_model(cfg)


@pytest.mark.parametrize("name, options", MODEL_CASES)
def test_config_round_trips_through_dict(make_model, name, options):
    model = make_model(name, options)
    again = model_config_from_dict(model.config.to_dict())
    assert again == model.config and type(again) is type(model.config)
