"""The model contract, checked for every registered model (omnivae.models.MODELS) and the
option variants listed in VARIANTS: a newly registered model is covered by adding nothing,
or its build options to OPTIONS and its name to SINGLE (one modality) if it needs them.

Each model builds from a config dict whose JSON round-trips; its loss is a finite scalar
with detached terms; backward reaches every parameter the objective uses; it trains on a
tiny batch; missing modalities are handled (placeholders never matter, an example with
nothing present adds nothing); encode / generate / sample / reconstruct give the documented
shapes; save + load gives the same weights and outputs bit for bit; and it trains from a
config file through the CLI. Objectives checked against their formulas, and other
model-specific behaviour, live in the model's own test file (test_<model>.py,
test_models_ae.py). The last section checks the shared user-API and config errors once.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from omnivae import Batch, ConfigError, InputError
from omnivae.io import load_model, save_model
from omnivae.models import MODELS, build_model, model_config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

SINGLE = {"vae", "iwae", "ae", "dae", "sparse_ae", "stacked_ae", "ladder_vae"}  # models of exactly one modality
OPTIONS = {"stacked_ae": {"layers": [16, 8, 4], "pretrain_epochs": 1}, "cvae": {"target": "image"},
           "ladder_vae": {"layers": [8, 4]}}
CONDITIONAL = {"cvae"}  # generates its target given its conditions only (no unconditional samples)
DETERMINISTIC = {"ae", "dae", "sparse_ae", "stacked_ae", "multimodal_ae"}  # point codes: no KL term
UNUSED = {"cvae": ("modalities.label.decoder.",),  # parameters the objective never reaches
          "m2": ("modalities.label.",)}
LABELLED = {"m2"}  # needs a categorical label modality (mnist_label has one, shapes none)
# terms rec and kl with total = -(rec - beta * beta_scale * kl)
ELBO = {"vae", "mvae", "mmvae", "mopoe", "mmvae_plus", "cvae", "dmvae", "telbo", "crmvae", "cmvae", "ladder_vae"}
VARIANTS = [  # (model, options, modalities or None for the model's default): estimators and options
    ("mmvae", {"k": 3}, None), ("mmvae", {"estimator": "iwae", "k": 3}, None),
    ("mmvae", {"estimator": "dreg", "k": 3}, None), ("mopoe", {"prior_expert": True}, None),
    ("mmvae_plus", {"estimator": "iwae", "k": 3}, None), ("mmvae_plus", {"estimator": "dreg", "k": 3}, None),
    ("cmvae", {"estimator": "dreg", "k": 3, "clusters": 3}, None), ("crmvae", {"prior_expert": True}, None),
    ("iwae", {"k": 4}, None), ("iwae", {"k": 4, "estimator": "dreg"}, None),
    ("ae", {"sparsity": "kl", "sparsity_weight": 1.0}, None),
    ("dae", {"noise": "gaussian", "noise_level": 0.2}, None),
    ("dae", {"noise": "salt_pepper", "noise_level": 0.2}, None),
    ("dae", {"noise": "gaussian", "noise_level": 0.3}, ("vector",)),
    ("stacked_ae", {"layers": [8, 2], "pretrain_epochs": 1}, ("vector",)),
    ("ladder_vae", {"layers": [8, 6, 4], "hidden": [16]}, ("vector",)),
    # an image branch with private ladder layers below the code (omnivae.modalities.ladder_branch)
    ("vae", {"image_spec": {"ladder": [6, 5]}}, None), ("mopoe", {"image_spec": {"ladder": [6]}}, None),
    ("mmvae_plus", {"image_spec": {"ladder": [6]}}, None), ("mvae", {"image_spec": {"ladder": [6]}}, None),
]
SHAPES = {"image": (1, 8, 8), "label": (), "vector": (4,)}  # one example's output, by modality


def case_id(name, options, names) -> str:
    parts = [name, *(f"{k}={v}" for k, v in options.items()), *(names or ())]
    return "-".join(str(p).replace(" ", "") for p in parts)


CASES = [pytest.param(name, {}, None, id=name) for name in sorted(MODELS)]
CASES += [pytest.param(*v, id=case_id(*v)) for v in VARIANTS]


def config_of(tiny_config, name, options, names, **extra) -> dict:
    names = names or (("image",) if name in SINGLE else ("image", "label"))
    options = {**OPTIONS.get(name, {}), **options, **extra}
    if "layers" in options:  # stacked_ae, ladder_vae: the code size is the last layer
        options["latent_dim"] = options["layers"][-1]
    image_spec = options.pop("image_spec", {})  # options of the image modality's spec
    config = tiny_config(name, names, **options)
    if image_spec:
        config["modalities"]["image"].update(image_spec)
    return config


@pytest.fixture
def make(tiny_config):
    def build(name, options, names, seed=0, **extra):
        torch.manual_seed(seed)
        return build_model(config_of(tiny_config, name, options, names, **extra))
    return build


@pytest.fixture
def batch_for(make_tensors):
    def build(model, n=16, seed=0, mask=None):
        data = make_tensors(n, seed)
        return Batch({k: data[k] for k in model.names}, dict(mask or {}))
    return build


def at_seed(model, batch, seed=0, beta_scale=1.0):
    torch.manual_seed(seed)
    return model.loss(batch, beta_scale)


def given_and_targets(name, model) -> tuple[list[str], list[str]]:
    """What generation is given (the last modality; a conditional model's conditions) and what it
    produces by default (every modality; a conditional model's target)."""
    if name in CONDITIONAL:
        return list(model.config.conditions), [model.config.target]
    return [model.names[-1]], list(model.names)


# -- building and the objective --------------------------------------------------------------------
def test_registry_holds_the_built_in_families():
    assert {"vae", "mvae", "mmvae", "mopoe", "ae", "dae", "sparse_ae", "stacked_ae", "iwae", "multimodal_ae",
            "jmvae", "mvtcae", "mmvae_plus", "cvae"} <= set(MODELS)


@pytest.mark.parametrize("name, options, names", CASES)
def test_builds_from_a_dict_and_its_config_round_trips(make, name, options, names):
    model = make(name, options, names)
    assert type(model) is MODELS[name] and type(model.config) is MODELS[name].config_class
    again = model_config_from_dict(model.config.to_dict())
    assert again == model.config and type(again) is type(model.config)
    rebuilt = build_model(model.config.to_dict())
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, options, names", CASES)
def test_loss_is_a_finite_scalar_with_detached_terms(make, batch_for, name, options, names):
    model = make(name, options, names)
    batch = batch_for(model)
    out = at_seed(model, batch)
    assert out.total.dim() == 0 and torch.isfinite(out.total) and out.total.requires_grad
    assert {"loss", "rec"} <= set(out.terms) and (name in DETERMINISTIC or "kl" in out.terms)
    assert all(torch.isfinite(v).all() and not v.requires_grad for v in out.terms.values())
    assert out.terms["loss"].item() == pytest.approx(out.total.item(), rel=1e-6)
    assert model(batch).total.dim() == 0  # forward is the loss


ELBO_CASES = [c for c in CASES if c.values[0] in ELBO and c.values[1].get("estimator", "elbo") == "elbo"]


@pytest.mark.parametrize("name, options, names", ELBO_CASES)
def test_beta_and_beta_scale_weight_the_kl_term(make, batch_for, name, options, names):
    model = make(name, options, names, beta=2.0)
    batch = batch_for(model)
    for scale in (0.0, 0.5, 1.0):
        out = at_seed(model, batch, beta_scale=scale)
        want = -(out.terms["rec"] - 2.0 * scale * out.terms["kl"])
        assert out.total.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-4)
    assert at_seed(model, batch, beta_scale=0.0).terms["kl"] > 0


def check_gradients(model, name):
    """Every trainable parameter the objective uses has a non-zero gradient."""
    skip = UNUSED.get(name, ())
    for pname, p in model.named_parameters():
        if p.requires_grad and not pname.startswith(skip):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


@pytest.mark.parametrize("name, options, names", CASES)
def test_gradients_reach_every_network_and_the_loss_falls_on_a_tiny_batch(make, batch_for, name, options, names):
    model = make(name, options, names)
    batch = batch_for(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for step in range(150):
        opt.zero_grad()
        out = model.loss(batch)
        assert torch.isfinite(out.total), f"{name}: non-finite loss at step {step}"
        out.total.backward()
        if step == 0:
            check_gradients(model, name)
        opt.step()
        losses.append(out.total.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert math.isfinite(last) and last < first - 0.2 * abs(first), f"{name}: loss {first:.3f} -> {last:.3f}"


# -- missing modalities -------------------------------------------------------------------------------
def partial_mask(model, n=16):
    patterns = {"image": [True, False, True, True], "label": [True, True, False, True],
                "vector": [True, True, True, False]}
    return {m: torch.tensor(patterns[m] * (n // 4)) for m in model.names}


@pytest.mark.parametrize("name, options, names", CASES)
def test_missing_entries_give_a_finite_loss_independent_of_their_placeholders(make, batch_for, name, options, names):
    model = make(name, options, names)
    mask = partial_mask(model)
    batch = batch_for(model, mask=mask)
    a = at_seed(model, batch)
    assert torch.isfinite(a.total)
    changed = {k: v.clone() for k, v in batch.data.items()}
    for m, x in changed.items():  # other values where the entry is missing
        gone = ~mask[m]
        if x.dtype == torch.uint8:
            x[gone] = torch.randint(0, 256, x[gone].shape, dtype=torch.uint8)
        elif x.is_floating_point():
            x[gone] = x[gone] + 1.0
        else:
            x[gone] = (x[gone] + 1) % 3
    assert at_seed(model, Batch(changed, mask)).total.item() == pytest.approx(a.total.item(), rel=1e-6, abs=1e-5)
    first = model.names[0]  # ... while a present entry does change it (the check above can fail)
    changed[first][0] = 255 - changed[first][0] if changed[first].dtype == torch.uint8 else changed[first][0] + 3.0
    assert at_seed(model, Batch(changed, mask)).total.item() != pytest.approx(a.total.item(), rel=1e-6)
    a.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name, options, names", CASES)
def test_all_true_mask_equals_no_mask(make, batch_for, name, options, names):
    model = make(name, options, names)
    full = {m: torch.ones(16, dtype=torch.bool) for m in model.names}
    assert at_seed(model, batch_for(model)).total.item() == pytest.approx(
        at_seed(model, batch_for(model, mask=full)).total.item(), rel=1e-6)


@pytest.mark.parametrize("name, options, names", CASES)
def test_an_example_with_nothing_present_adds_nothing(make, batch_for, name, options, names):
    model = make(name, options, names)
    nothing = torch.tensor([True] * 15 + [False])  # the last example has no modality at all
    out = at_seed(model, batch_for(model, mask={m: nothing for m in model.names}))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    empty = at_seed(model, batch_for(model, mask={m: torch.zeros(16, dtype=torch.bool) for m in model.names}))
    assert empty.total.item() == 0.0  # a batch with nothing present: nothing to learn from


# -- user API -----------------------------------------------------------------------------------------
def check_output(model, name, x, lead):
    kind = model.modalities[name].kind
    shape = (*lead, *SHAPES[name])
    assert tuple(x.shape) == shape, (name, tuple(x.shape), shape)
    if kind == "image":
        assert 0 <= x.min() and x.max() <= 1
    if kind == "categorical":
        assert x.dtype == torch.long


@pytest.mark.parametrize("name, options, names", CASES)
def test_encode_generate_sample_reconstruct(make, make_tensors, name, options, names):
    model = make(name, options, names).eval()
    x = {k: v for k, v in make_tensors(5).items() if k in model.names}
    d = model.config.latent_dim
    given, targets = given_and_targets(name, model)
    first = targets[0]
    assert model.encode(x).shape == (5, d) and model.encode(x, sample=True).shape == (5, d)
    assert model.encode(x, given=given).shape == (5, d) and model.encode(x, given=model.names[:1]).shape == (5, d)
    assert model.encode({given[0]: x[given[0]]}).shape == (5, d)  # a batch holding some modalities only
    out = model.generate(x, n=3)
    assert set(out) == set(targets)
    for t in targets:
        check_output(model, t, out[t], (3, 5))
    check_output(model, first, model.generate(x, given=given, targets=[first], n=2)[first], (2, 5))
    check_output(model, first, model.generate(x)[first], (5,))  # n=1: no leading n dim
    check_output(model, first, model.generate({g: x[g] for g in given}, targets=[first])[first], (5,))
    mean = model.generate(x, n=2, mean=True)[first]
    torch.testing.assert_close(mean[0], mean[1])  # the same code decoded twice
    torch.testing.assert_close(mean, model.generate(x, n=2, mean=True)[first])
    raw = model.generate(x, raw=True, mean=True)[first]
    assert isinstance(raw, torch.Tensor) and tuple(raw.shape) == (5, *SHAPES[first])
    rec = model.reconstruct(x)
    assert set(rec) == set(targets)
    for t in targets:
        check_output(model, t, rec[t], (5,))
    if name in CONDITIONAL:
        with pytest.raises(InputError, match="no unconditional samples"):
            model.sample(3)
        return
    samples = model.sample(7)
    assert set(samples) == set(model.names)
    for t in model.names:
        check_output(model, t, samples[t], (7,))
    check_output(model, model.names[-1], model.sample(1, targets=[model.names[-1]])[model.names[-1]], (1,))


@pytest.mark.parametrize("name, options, names", CASES)
def test_encode_views_equals_encode_per_view(make, make_tensors, name, options, names):
    """The one-pass shortcut of encode_views (models whose encodings are per modality) gives what
    `encode` gives for each view; a model whose rows read several modalities must say so."""
    from omnivae.batch import Batch

    model = make(name, options, names).eval()
    x = {k: v for k, v in make_tensors(6).items() if k in model.names}
    batch = model.as_batch(x, {k: torch.tensor([True, True, False, True, True, True]) for k in x})
    assert isinstance(batch, Batch)
    views = {"all": None, **{f"only {m}": [m] for m in model.names}, "first two": model.names[:2]}
    got = model.encode_views(batch, views)
    for view, given in views.items():
        torch.testing.assert_close(got[view], model.encode(batch, given=given), msg=view)


@pytest.mark.parametrize("name, options, names", CASES)
def test_anomaly_scores_and_likelihoods_work_or_refuse_by_name(make, make_tensors, name, options, names):
    """Every model gets finite anomaly scores (its decoders read what `decoder_codes` gives them:
    private parts, conditions, levels of a hierarchy), and an importance-weighted likelihood that
    is either finite or refused with a message naming the model."""
    from omnivae.data.tensors import TensorData
    from omnivae.metrics.likelihood import iw_log_likelihood
    from omnivae.tasks.detect import AnomalyDetector

    model = make(name, options, names).eval()
    x = {k: v for k, v in make_tensors(6).items() if k in model.names}
    data = TensorData(x, {k: torch.ones(6, dtype=torch.bool) for k in x}, {})
    scores = AnomalyDetector(model, n_samples=2).score(data)
    assert {"neg_elbo", *(f"nll_{m}" for m in model.names)} <= set(scores)
    for key, values in scores.items():
        assert values.shape == (6,) and np.isfinite(values).all(), key
    try:
        ll = iw_log_likelihood(model, Batch(x, {}), model.names, k=3)
    except InputError as exc:
        assert repr(name) in str(exc)
    else:
        assert ll.shape == (6,) and torch.isfinite(ll).all()


@pytest.mark.parametrize("name, options, names", CASES)
def test_save_load_round_trip_is_bit_for_bit(make, batch_for, make_tensors, tmp_path, name, options, names):
    model = make(name, options, names)
    batch = batch_for(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # weights that are not the initial ones
        opt.zero_grad()
        model.loss(batch).total.backward()
        opt.step()
    model.eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    saved, again = model.state_dict(), loaded.state_dict()
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    x = {k: v for k, v in make_tensors(6, seed=1).items() if k in model.names}
    given, targets = given_and_targets(name, model)
    assert torch.equal(model.encode(x), loaded.encode(x))
    assert torch.equal(model.encode(x, given=given), loaded.encode(x, given=given))
    a = model.generate(x, given=given, targets=targets[:1], mean=True, raw=True)[targets[0]]
    assert torch.equal(a, loaded.generate(x, given=given, targets=targets[:1], mean=True, raw=True)[targets[0]])


# -- end to end: every model trains from a config file ----------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SHAPES_SETS = ["data.options.n=160", "data.options.image_size=16", "model.latent_dim=4",
               "model.modalities.image={arch: mlp, hidden: [32]}",
               "model.modalities.text={hidden: 16, embed_dim: 8, max_len: 6}"]
MNIST_SETS = [f"data.options.root={MNIST}", "data.options.limit=300", "data.options.split=test",
              "model.latent_dim=4", "model.modalities.image={arch: mlp, hidden: [32]}",
              "model.modalities.label={hidden: [16]}"]
TRAIN_SETS = ["train.max_epochs=1", "train.batch_size=64", "train.progress=false", "train.tensorboard=false"]


def model_sets(name: str) -> list[str]:
    sets = [f"model.model={name}"]
    if name in SINGLE:  # one modality: keep the image
        sets.append("model.modalities={image: {arch: mlp, hidden: [32]}}")
    if name == "stacked_ae":
        sets += ["model.layers=[32, 4]", "model.pretrain_epochs=0"]
    if "target" in OPTIONS.get(name, {}):
        sets.append(f"model.target={OPTIONS[name]['target']}")
    if name not in SINGLE and MODELS[name].supports_conditional_prior:  # runs fit one by default: a tiny one
        sets.append("model.conditional_prior={transforms: 1, hidden: [16], steps: 5}")
    return sets


@pytest.mark.slow
@pytest.mark.parametrize("data", ["shapes", "mnist_label"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_from_a_config_file(tmp_path, name, data):
    from omnivae.cli import app

    if data == "shapes" and name in LABELLED:
        pytest.skip(f"{name} needs a categorical label modality; shapes has image and text")
    if data == "mnist_label" and not MNIST.is_dir():
        pytest.skip(f"MNIST files not found at {MNIST}")
    sets = (SHAPES_SETS if data == "shapes" else MNIST_SETS) + TRAIN_SETS + model_sets(name)
    args = ["train", "--config", str(ROOT / "configs" / f"{data}.yaml"), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "model")
    assert model.config.model == name
    assert yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["model"]["model"] == name
    if any(s.startswith("model.conditional_prior=") for s in sets):  # fitted after training
        assert model.conditional_prior is not None and model.conditional_prior.is_fitted
    if data == "shapes" and name not in SINGLE:  # image and caption: generation across them
        out = model.generate({"text": ["a red circle", "a blue square"]}, given=["text"], targets=["image"], n=2)
        assert out["image"].shape == (2, 2, 3, 16, 16)
        if name not in CONDITIONAL:
            captions = model.generate({"image": out["image"][0]}, given=["image"], targets=["text"], mean=True)["text"]
            assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


# -- shared user-API and configuration errors (the base class; checked once) ------------------------
@pytest.fixture
def mvae(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config("mvae")).eval()


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_single_modality_models_refuse_two(tiny_config, name):
    with pytest.raises(ConfigError, match="exactly one modality"):
        build_model(config_of(tiny_config, name, {}, ("image", "vector")))


def test_api_input_errors(mvae, make_tensors):
    data = {k: v for k, v in make_tensors(4).items() if k in mvae.names}
    with pytest.raises(InputError, match="'audio'"):
        mvae.generate(data, given=["audio"])
    with pytest.raises(InputError, match="'audio'"):
        mvae.generate(data, targets=["audio"])
    with pytest.raises(InputError, match="'audio'"):
        mvae.sample(2, targets=["audio"])
    with pytest.raises(InputError, match="'label'"):
        mvae.encode({"image": data["image"]}, given=["label"])  # named, but not in the batch
    with pytest.raises(InputError, match="'audio'"):
        mvae.encode({**data, "audio": data["label"]})
    with pytest.raises(InputError, match="n must be"):
        mvae.generate(data, n=0)
    with pytest.raises(InputError, match="n must be"):
        mvae.sample(0)
    with pytest.raises(InputError, match="batch sizes"):
        mvae.encode({"image": data["image"], "label": data["label"][:3]})
    with pytest.raises(InputError, match=r"mask of 'label'.*\[4\]"):
        mvae.encode(data, mask={"label": [True, False]})
    with pytest.raises(InputError, match="'image'"):
        mvae.encode({"image": data["image"].float()})  # 0..255 floats are out of range
    with pytest.raises(InputError):
        mvae.encode({})
    with pytest.raises(InputError, match="'label'"):  # a mask for a modality the batch lacks
        mvae.encode({"image": data["image"]}, mask={"label": [True] * 4})


def test_class_names_come_back_as_strings(tiny_config):
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
    data = {k: v for k, v in make_tensors(6).items() if k in plain.names}
    mask = {"label": torch.tensor([True, False] * 3)}
    z = torch.randn(2, 6, 4)
    a = plain.log_likelihoods(z, Batch(data, mask))
    b = heavy.log_likelihoods(z, Batch(data, mask))
    torch.testing.assert_close(b["label"], 2.5 * a["label"])
    torch.testing.assert_close(a["image"], b["image"])
    direct = plain.modalities["label"].log_likelihood(z, data["label"]) * mask["label"]
    torch.testing.assert_close(a["label"], direct)


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
    (lambda c: c["modalities"]["image"].update(kind="video"), "unknown kind 'video'"),
])
def test_invalid_configs(tiny_config, change, pattern):
    cfg = tiny_config("mvae")
    change(cfg)
    with pytest.raises(ConfigError, match=pattern):
        build_model(cfg)
