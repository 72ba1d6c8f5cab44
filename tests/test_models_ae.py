"""Deterministic autoencoders (ae, dae, sparse_ae), the stacked AE with layer-wise
pre-training, the IWAE objective and the multimodal AE: objectives against their formulas,
noise and sparsity, stages, and option errors. The shared contract (training, the user API,
save/load, missing modalities) is in test_model_suite.py."""
from __future__ import annotations

import csv
import math

import pytest
import torch

import omnivae.models.ae as ae_module
from omnivae import Batch, ConfigError
from omnivae.distributions import log_normal, log_standard_normal
from omnivae.io import load_model
from omnivae.models import build_model
from test_model_suite import batch_for  # noqa: F401 (the contract suite's batch fixture)

SINGLE = ("image",)
PAIR = ("image", "label")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is faster and unaffected by other work on the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_model(tiny_config):
    def build(name, options=None, names=SINGLE, seed=0, **config):
        torch.manual_seed(seed)
        cfg = tiny_config(name, names, **{**(options or {}), **config})
        if name == "stacked_ae" and "layers" in cfg:
            cfg.pop("latent_dim")  # the code size comes from layers
        return build_model(cfg)
    return build


def loss_at_seed(model, batch, seed=0, beta_scale=1.0):
    torch.manual_seed(seed)
    return model.loss(batch, beta_scale)


def train_steps(model, batch, steps=150, lr=1e-2):
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model.loss(batch).total.backward()
        opt.step()
    return model.eval()


# -- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, match", [
    ({"noise": "masking"}, "noise_level > 0"),
    ({"noise": "masking", "noise_level": 1.0}, "below 1"),
    ({"noise_level": -0.1}, "noise_level must be >= 0"),
    ({"sparsity_weight": -1.0}, "sparsity_weight"),
    ({"sparsity_target": 0.0}, "sparsity_target"),
])
def test_ae_option_errors(make_model, options, match):
    with pytest.raises(ConfigError, match=match):
        make_model("ae", options)


def test_noise_needs_float_inputs(tiny_config):
    with pytest.raises(ConfigError, match="image or vector inputs"):
        build_model(tiny_config("dae", ("label",)))


# -- plain, denoising and sparse autoencoders --------------------------------------------------
def test_ae_objective_is_the_modality_likelihood_of_the_encoder_mean(make_model, batch_for):
    model = make_model("ae").eval()
    batch = batch_for(model)
    mod, x = model.modalities["image"], batch.data["image"]
    h = mod.encode(x).mu
    logits = mod.decoder(h)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x.float().div(255).flatten(1),
                                                               reduction="none").sum(1).mean()
    out = model.loss(batch)
    assert out.total.item() == pytest.approx(bce.item(), rel=1e-5)
    assert out.terms["sparsity"].item() == 0.0
    assert torch.allclose(model.encode({"image": x}), h)


def test_ae_code_is_a_point_with_tiny_variance(make_model, batch_for):
    model = make_model("ae")
    batch = batch_for(model)
    mu, logvar, present = model.encode_unimodal(batch)
    q = model.fuse(mu, logvar, present)
    assert torch.equal(q.mu, mu[0]) and (q.logvar <= -12).all()


def test_denoising_corrupts_only_in_training(make_model, batch_for):
    model = make_model("dae", {"noise_level": 0.5})
    batch = batch_for(model)
    clean = model.modalities["image"].encode(batch.data["image"]).mu
    model.train()
    noisy_a, noisy_b = model.code(batch), model.code(batch)
    assert not torch.allclose(noisy_a, clean) and not torch.allclose(noisy_a, noisy_b)
    model.eval()
    assert torch.equal(model.code(batch), clean)
    data = {"image": batch.data["image"]}
    assert torch.equal(model.encode(data), model.encode(data))
    model.train()  # the user API never corrupts, whatever the mode
    assert torch.equal(model.encode(data), clean)


def test_denoising_target_stays_clean(make_model, batch_for):
    model = make_model("dae").train()
    batch = batch_for(model)
    out = loss_at_seed(model, batch, seed=5)
    torch.manual_seed(5)
    h = model.code(batch)
    want = model.modalities["image"].log_likelihood(h.unsqueeze(0), batch.data["image"])[0].mean()
    assert out.terms["rec"].item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "masking", "salt_pepper"])
def test_corruption_kinds(kind):
    torch.manual_seed(0)
    x = torch.rand(200, 50) * 0.8 + 0.1
    y = ae_module.corrupt(x, kind, 0.3)
    assert y.shape == x.shape and not torch.equal(x, y) and (x >= 0.1).all()  # x untouched
    changed = y != x
    if kind == "gaussian":
        assert (y - x).std().item() == pytest.approx(0.3, rel=0.05)
    else:
        assert changed.float().mean().item() == pytest.approx(0.3, abs=0.02)
        allowed = [0.0] if kind == "masking" else [x.min().item(), x.max().item()]
        assert all(any(math.isclose(v, a, abs_tol=1e-7) for a in allowed) for v in y[changed].unique().tolist())


def test_l1_sparsity_lowers_code_magnitude(make_model, batch_for):
    codes = {}
    for sparsity in ("none", "l1"):
        model = make_model("ae", {"sparsity": sparsity, "sparsity_weight": 2.0}, seed=0)
        batch = batch_for(model)
        train_steps(model, batch)
        codes[sparsity] = model.encode({"image": batch.data["image"]}).abs().mean().item()
    assert codes["l1"] < 0.5 * codes["none"], codes


def test_kl_sparsity_penalty_matches_formula(make_model, batch_for):
    model = make_model("ae", {"sparsity": "kl", "sparsity_target": 0.1, "sparsity_weight": 0.5}).eval()
    batch = batch_for(model, mask={"image": torch.arange(16) < 10})
    h = model.code(batch)
    rho_hat = torch.sigmoid(h[:10]).mean(0)
    want = (0.1 * torch.log(0.1 / rho_hat) + 0.9 * torch.log(0.9 / (1 - rho_hat))).sum()
    out = model.loss(batch)
    assert out.terms["sparsity"].item() == pytest.approx(want.item(), rel=1e-5)
    assert out.total.item() == pytest.approx((-out.terms["rec"] + 0.5 * want).item(), rel=1e-5)


def test_missing_examples_do_not_count(make_model, batch_for):
    model = make_model("sparse_ae").eval()
    batch = batch_for(model, mask={"image": torch.arange(16) < 8})
    half = Batch({"image": batch.data["image"][:8]})
    assert model.loss(batch).total.item() == pytest.approx(model.loss(half).total.item(), rel=1e-6)


# -- stacked autoencoder ---------------------------------------------------------------------------
def stack(model):
    mod = model.modalities["image"]
    return mod.encoder.layers, mod.decoder.layers


def test_stacked_config_takes_code_size_from_layers(tiny_config):
    cfg = tiny_config("stacked_ae", SINGLE, layers=[16, 8, 3])
    cfg.pop("latent_dim")
    model = build_model(cfg)
    assert model.config.latent_dim == 3 and model.config.modalities["image"].arch == "mlp"
    with pytest.raises(ConfigError, match="must equal latent_dim"):
        build_model(tiny_config("stacked_ae", SINGLE, latent_dim=4, layers=[16, 8]))
    with pytest.raises(ConfigError, match="image or vector"):
        build_model(tiny_config("stacked_ae", ("label",), layers=[8, 4]))


def test_stacked_stage_follows_the_epoch(make_model, batch_for):
    model = make_model("stacked_ae", {"layers": [16, 8, 4], "pretrain_epochs": 2})
    assert model.stage == 3  # a model outside the trainer uses the end-to-end objective
    seen = []
    for epoch in range(9):
        model.on_train_epoch_start(epoch)
        seen.append(model.stage)
    assert seen == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert model.pretraining_epochs == 6
    model.on_train_epoch_start(2)
    out = model.train().loss(batch_for(model))
    assert out.terms["stage"].item() == 1.0
    assert out.terms["stage_loss"].item() == pytest.approx(out.total.item())
    assert out.terms["loss"].item() == pytest.approx(-out.terms["rec"].item())
    assert model.eval().loss(batch_for(model)).terms["stage"].item() == 3.0  # validation: end to end


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_stacked_stage_trains_only_its_layer_pair(make_model, batch_for, stage):
    model = make_model("stacked_ae", {"layers": [16, 8, 4], "pretrain_epochs": 1}).train()
    model.on_train_epoch_start(stage)
    model.loss(batch_for(model)).total.backward()
    enc, dec = stack(model)
    for k in range(3):
        for layer in (enc[k], dec[k]):
            has_grad = layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
            assert has_grad == (k == stage or stage == 3), (k, stage)


def test_stacked_pair_objectives_match_formula(make_model, batch_for):
    model = make_model("stacked_ae", {"layers": [16, 8, 4], "pretrain_epochs": 1, "activation": "tanh"}).train()
    batch = batch_for(model)
    x = batch.data["image"].float().div(255).flatten(1)
    enc, dec = stack(model)
    h1 = torch.tanh(enc[0](x))
    model.on_train_epoch_start(0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(dec[0](h1), x, reduction="none").sum(1).mean()
    assert model.loss(batch).total.item() == pytest.approx(bce.item(), rel=1e-5)
    model.on_train_epoch_start(1)
    rebuilt = torch.tanh(dec[1](torch.tanh(enc[1](h1))))
    assert model.loss(batch).total.item() == pytest.approx((rebuilt - h1).pow(2).sum(1).mean().item(), rel=1e-5)


def test_stacked_train_run_logs_the_stage(monkeypatch, tmp_path, make_raw):
    import omnivae.run

    raw = make_raw(48, names=("image",))
    monkeypatch.setattr(omnivae.run, "load_source", lambda config: raw)
    config = {
        "model": {"model": "stacked_ae", "layers": [16, 4], "pretrain_epochs": 1},
        "train": {"max_epochs": 4, "batch_size": 16, "progress": False, "tensorboard": False,
                  "patience": None, "log_every_n_steps": 1, "num_threads": 1},
    }
    result = omnivae.run.train_run(config, tmp_path / "run")
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    stages = [float(r["train/stage_epoch"]) for r in rows if r.get("train/stage_epoch")]
    assert stages == [0.0, 1.0, 2.0, 2.0]
    loaded = load_model(tmp_path / "run" / "model")
    assert type(loaded).__name__ == "StackedAE" and loaded.stage == 2
    images = torch.from_numpy(raw.modalities["image"][:4])
    assert torch.equal(loaded.encode({"image": images}), result.model.encode({"image": images}))


# -- IWAE ---------------------------------------------------------------------------------------------
def one_draw_elbo(model, batch, seed):
    torch.manual_seed(seed)
    q = model.modalities["image"].encode(batch.data["image"])
    z = q.rsample(1)
    rec = model.modalities["image"].log_likelihood(z, batch.data["image"])
    return (rec + log_standard_normal(z) - log_normal(z, q.mu, q.logvar)).mean()


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
def test_iwae_with_one_draw_is_the_elbo(make_model, batch_for, estimator):
    model = make_model("iwae", {"k": 1, "estimator": estimator})
    batch = batch_for(model)
    for seed in range(3):
        out = loss_at_seed(model, batch, seed)
        assert -out.total.item() == pytest.approx(one_draw_elbo(model, batch, seed).item(), rel=1e-5)


def test_iwae_more_draws_give_a_tighter_bound(make_model, batch_for):
    batch = None
    bounds = {}
    for k in (1, 10):
        model = make_model("iwae", {"k": k}, seed=0)
        batch = batch or batch_for(model)
        bounds[k] = sum(-loss_at_seed(model, batch, seed).total.item() for seed in range(20)) / 20
    assert bounds[10] >= bounds[1], bounds


def test_iwae_matches_logmeanexp_formula(make_model, batch_for):
    model = make_model("iwae", {"k": 6}, beta=0.5)
    batch = batch_for(model)
    out = loss_at_seed(model, batch, seed=2)
    torch.manual_seed(2)
    q = model.modalities["image"].encode(batch.data["image"])
    z = q.rsample(6)
    rec = model.modalities["image"].log_likelihood(z, batch.data["image"])
    log_w = rec + 0.5 * (log_standard_normal(z) - log_normal(z, q.mu, q.logvar))
    want = (torch.logsumexp(log_w, 0) - math.log(6)).mean()
    assert -out.total.item() == pytest.approx(want.item(), rel=1e-5)


def test_iwae_bound_stays_finite_for_tiny_weights(make_model, batch_for):
    model = make_model("iwae", {"k": 8})
    batch = batch_for(model)
    with torch.no_grad():
        model.modalities["image"].decoder[-1].bias.fill_(-300.0)  # log w around -1e4
    out = loss_at_seed(model, batch)
    assert torch.isfinite(out.total) and out.total.item() > 1e3


def test_dreg_keeps_the_value_and_the_decoder_gradient(make_model, batch_for):
    grads = {}
    for estimator in ("iwae", "dreg"):
        model = make_model("iwae", {"k": 5, "estimator": estimator}, seed=0)
        batch = batch_for(model)
        out = loss_at_seed(model, batch, seed=1)
        out.total.backward()
        mod = model.modalities["image"]
        grads[estimator] = (out.total.item(), mod.decoder[0].weight.grad.clone(), mod.encoder[1][0].weight.grad.clone())
    (v_i, dec_i, enc_i), (v_d, dec_d, enc_d) = grads["iwae"], grads["dreg"]
    assert v_i == pytest.approx(v_d, rel=1e-6)
    assert torch.allclose(dec_i, dec_d, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(enc_i, enc_d, rtol=1e-3, atol=1e-6)


def test_iwae_encodes_to_the_posterior_mean(make_model, batch_for):
    model = make_model("iwae")
    batch = batch_for(model)
    data = {"image": batch.data["image"]}
    assert torch.allclose(model.encode(data), model.modalities["image"].encode(data["image"]).mu)


# -- multimodal autoencoder -------------------------------------------------------------------------
def test_multimodal_ae_fuses_present_codes_by_their_mean(make_model, batch_for):
    model = make_model("multimodal_ae", names=PAIR).eval()
    mask = {"label": torch.arange(16) % 2 == 0, "image": torch.arange(16) != 0}
    batch = batch_for(model, mask=mask)
    mu, logvar, present = model.encode_unimodal(batch)
    code = model.fuse(mu, logvar, present)
    both = mask["label"] & mask["image"]
    assert torch.allclose(code.mu[both], mu[:, both].mean(0))
    only_image = ~mask["label"] & mask["image"]
    assert torch.allclose(code.mu[only_image], mu[0, only_image])
    assert torch.allclose(code.mu[0], mu[1, 0])  # example 0 holds only its label
    data = {k: batch.data[k] for k in PAIR}
    assert torch.allclose(model.encode(data, given=["label"]), mu[1])


def test_multimodal_ae_loss_matches_formula(make_model, batch_for):
    model = make_model("multimodal_ae", names=PAIR, unimodal_weight=0.5, rescale="none").eval()  # formula: weight 1
    mask = {"label": torch.arange(16) % 2 == 0}
    batch = batch_for(model, mask=mask)
    mods, x = model.modalities, batch.data
    h_img, h_lab = mods["image"].encode(x["image"]).mu, mods["label"].encode(x["label"]).mu
    lab = mask["label"].float()
    joint = torch.where(mask["label"].unsqueeze(1), (h_img + h_lab) / 2, h_img)

    def rec(h):  # summed over the present modalities
        return mods["image"].log_likelihood(h[None], x["image"])[0] + lab * mods["label"].log_likelihood(h[None], x["label"])[0]

    cross = (rec(h_img) + lab * rec(h_lab)) / (1 + lab)
    want = -(rec(joint) + 0.5 * cross).mean()
    assert model.loss(batch).total.item() == pytest.approx(want.item(), rel=1e-5)


def test_multimodal_ae_ignores_placeholders_of_missing_entries(make_model, batch_for, make_tensors):
    model = make_model("multimodal_ae", names=PAIR).eval()
    mask = {"label": torch.arange(16) % 3 != 0}
    batch = batch_for(model, mask=mask)
    other = dict(batch.data)
    other["label"] = torch.where(mask["label"], batch.data["label"], (batch.data["label"] + 1) % 3)
    assert model.loss(batch).total.item() == pytest.approx(model.loss(Batch(other, mask)).total.item(), rel=1e-6)
    nothing = {"image": torch.zeros(16, dtype=torch.bool), "label": torch.zeros(16, dtype=torch.bool)}
    nothing["image"][0] = True
    assert torch.isfinite(model.loss(Batch(batch.data, nothing)).total)


def test_multimodal_ae_cross_modal_generation_learns(make_model, batch_for):
    model = make_model("multimodal_ae", names=PAIR)
    batch = batch_for(model, n=32)
    train_steps(model, batch, steps=200)
    labels = model.generate({"image": batch.data["image"]}, given=["image"], targets=["label"], mean=True)["label"]
    assert (labels == batch.data["label"]).float().mean() > 0.9
