"""Overfitting controls: dropout in every modality's networks (absent at p = 0), training-image
augmentation (training batches only), the L1 and L2 weight penalties, and a run with all of them on."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

import omnivae.run
from omnivae import ConfigError, LossOutput, build_model
from omnivae.batch import Batch
from omnivae.data.tensors import TensorData
from omnivae.modalities import CategoricalSpec, ImageSpec, SignalSpec, VectorSpec, build_modality
from omnivae.run import train_run
from omnivae.run_folder import RunFolder
from omnivae.modalities.image_ops import shift_and_flip
from omnivae.train.augment import augment_batch
from omnivae.train.config import AugmentConfig, TrainConfig
from omnivae.train.module import OmniModule
from omnivae.train.penalties import penalized_weights
from omnivae.train.trainer import fit

pytestmark = pytest.mark.usefixtures("one_thread")

D = 4
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)
SPECS = {  # (spec class, options, a batch of inputs)
    "image_conv": (ImageSpec, {"shape": (1, 16, 16), "arch": "conv", "channels": [4, 8]},
                   lambda: torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)),
    "image_resnet": (ImageSpec, {"shape": (3, 48, 48), "arch": "resnet", "channels": [4, 8]},
                     lambda: torch.rand(3, 3, 48, 48)),
    "image_mlp": (ImageSpec, {"shape": (1, 8, 8), "arch": "mlp", "hidden": [16, 8]},
                  lambda: torch.rand(5, 1, 8, 8)),
    "vector": (VectorSpec, {"dim": 5, "hidden": [16, 8]}, lambda: torch.randn(5, 5)),
    "signal_conv": (SignalSpec, {"shape": (2, 32), "channels": [4, 8]}, lambda: torch.randn(5, 2, 32)),
    "signal_mlp": (SignalSpec, {"shape": (2, 32), "arch": "mlp", "hidden": [16]}, lambda: torch.randn(5, 2, 32)),
    "categorical": (CategoricalSpec, {"num_classes": 4, "hidden": [16, 8]}, lambda: torch.tensor([0, 1, 2, 3, 1])),
}


def build(key: str, seed: int = 0, **options):
    cls, base, _ = SPECS[key]
    torch.manual_seed(seed)
    return build_modality("m", cls(**{**base, **options}), D)


def decoded(modality, x):
    """Posterior means and the decoder's output for codes of those means (eval or train mode as set)."""
    mu = modality.encode(x).mu
    return mu, modality.decoder(mu)


# -- dropout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(SPECS))
def test_dropout_zero_builds_exactly_the_former_networks(key):
    default, explicit, dropped = build(key), build(key, dropout=0.0), build(key, dropout=0.3)
    assert default.spec.dropout == 0.0
    assert not any(isinstance(m, DROPOUTS) for m in default.modules())
    assert repr(default) == repr(explicit)
    # dropout only adds parameter-free dropout modules: the same parameters, in the same order
    assert [type(m) for m in default.modules()] == [type(m) for m in dropped.modules() if not isinstance(m, DROPOUTS)]
    assert any(isinstance(m, DROPOUTS) for m in dropped.encoder.modules())
    assert any(isinstance(m, DROPOUTS) for m in dropped.decoder.modules())
    assert [(k, v.shape) for k, v in default.state_dict().items()] == \
        [(k, v.shape) for k, v in explicit.state_dict().items()]
    assert [v.shape for v in default.state_dict().values()] == [v.shape for v in dropped.state_dict().values()]
    assert sum(1 for m in default.modules() if any(True for _ in m.parameters(recurse=False))) == \
        sum(1 for m in dropped.modules() if any(True for _ in m.parameters(recurse=False)))
    x = SPECS[key][2]()
    for a, b in zip(default.parameters(), dropped.parameters()):
        assert torch.equal(a, b)  # same seed, same initial weights: dropout draws nothing at build time
    default.eval(), dropped.eval()
    for a, b in zip(decoded(default, x), decoded(dropped, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("key", list(SPECS))
def test_dropout_varies_training_outputs_only(key):
    modality, x = build(key, dropout=0.5), SPECS[key][2]()
    modality.train()
    first, second = modality.encode(x).mu, modality.encode(x).mu
    assert not torch.equal(first, second)
    z = torch.randn(len(x), D)
    assert not torch.equal(modality.decoder(z), modality.decoder(z))
    modality.eval()
    for a, b in zip(decoded(modality, x), decoded(modality, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls, options", [(ImageSpec, {"shape": (1, 8, 8)}), (VectorSpec, {"dim": 3}),
                                          (SignalSpec, {"shape": (1, 16)}), (CategoricalSpec, {"num_classes": 3})])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_rate_is_validated(cls, options, rate):
    with pytest.raises(ConfigError, match="dropout"):
        cls.from_dict({**options, "dropout": rate}, "spec")


# -- augmentation ----------------------------------------------------------------------------------
def picture_batch(n=6, dtype=torch.uint8):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 2, 8, 8), dtype=torch.uint8, generator=gen)
    images = images if dtype == torch.uint8 else images.float() / 255
    labels = torch.arange(n) % 3
    return Batch({"image": images, "label": labels}, {"label": torch.ones(n, dtype=torch.bool)})


@pytest.fixture(scope="module")
def image_label_model(make_raw, tiny_config):
    return build_model(tiny_config("mvae"), make_raw(16))


def shifted(x, dy, dx):
    """x [C,H,W] moved down dy and right dx with edge pixels replicated."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return x[:, rows][:, :, cols]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shift_moves_each_image_within_the_range_and_keeps_dtype(dtype):
    x = picture_batch(32, dtype).data["image"]
    torch.manual_seed(0)
    out = shift_and_flip(x, 2, False)
    assert out.dtype == dtype and out.shape == x.shape
    moves = set()
    for a, b in zip(x, out):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(shifted(a, dy, dx), b)]
        assert found, "an image is not a shift of its input"
        moves.add(found[0])
    assert len(moves) > 5  # the offsets vary between examples


def test_flip_mirrors_some_images_and_leaves_the_others():
    x = picture_batch(32).data["image"]
    torch.manual_seed(0)
    out = shift_and_flip(x, 0, True)
    mirrored = [torch.equal(b, a.flip(-1)) for a, b in zip(x, out)]
    kept = [torch.equal(b, a) for a, b in zip(x, out)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 0 < sum(mirrored) < len(x)


def test_augmentation_changes_only_the_images(image_label_model):
    model, batch = image_label_model, picture_batch(8)
    batch.data["image"] = batch.data["image"][:, :1]
    torch.manual_seed(0)
    out = augment_batch(model, batch, AugmentConfig(shift=1, flip=True))
    assert out.data["label"] is batch.data["label"] and out.mask is batch.mask
    assert out.data["image"].dtype == torch.uint8 and out.data["image"].shape == batch.data["image"].shape
    assert not torch.equal(out.data["image"], batch.data["image"])
    assert augment_batch(model, batch, AugmentConfig()) is batch  # all off: the same batch


def test_noise_gives_floats_in_the_unit_range(image_label_model):
    model, batch = image_label_model, picture_batch(8)
    batch.data["image"] = batch.data["image"][:, :1]
    out = augment_batch(model, batch, AugmentConfig(noise=0.3)).data["image"]
    assert out.dtype == torch.float32 and out.shape == batch.data["image"].shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    clean = batch.data["image"].float() / 255
    assert 0.05 < float((out - clean).abs().mean()) < 0.3
    model.modalities["image"].check(out)  # the image modality accepts it


def test_augmentation_is_reproducible_under_a_seed(image_label_model):
    model, batch = image_label_model, picture_batch(8)
    batch.data["image"] = batch.data["image"][:, :1]
    config = AugmentConfig(shift=2, flip=True, noise=0.1)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(augment_batch(model, batch, config).data["image"])
    runs.append(augment_batch(model, batch, config, torch.Generator().manual_seed(7)).data["image"])
    runs.append(augment_batch(model, batch, config, torch.Generator().manual_seed(7)).data["image"])
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[2], runs[3])
    torch.manual_seed(8)
    assert not torch.equal(runs[0], augment_batch(model, batch, config).data["image"])


def test_augment_config_is_checked():
    with pytest.raises(ConfigError, match="augment.shift"):
        TrainConfig.from_dict({"augment": {"shift": -1}})
    with pytest.raises(ConfigError, match="augment.noise"):
        TrainConfig.from_dict({"augment": {"noise": -0.1}})
    with pytest.raises(ConfigError, match="did you mean"):
        TrainConfig.from_dict({"augment": {"flips": True}})


TRAIN = {"max_epochs": 1, "batch_size": 8, "progress": False, "tensorboard": False, "patience": None,
         "num_threads": 1, "log_every_n_steps": 1}


def test_augmentation_reaches_training_batches_and_never_validation(make_raw, tiny_config, tmp_path):
    model = build_model(tiny_config("mvae"), make_raw(16))
    train, val = TensorData.from_raw(model, make_raw(16)), TensorData.from_raw(model, make_raw(8, seed=1))
    seen = []
    loss = model.loss

    def recording(batch, beta=1.0):
        seen.append((model.training, batch.data["image"]))
        return loss(batch, beta)

    model.loss = recording  # the instance attribute: what the module's objective and validation call
    fit(model, train, val, TrainConfig.from_dict({**TRAIN, "augment": {"shift": 1, "noise": 0.2}}), tmp_path)
    training = [x for is_training, x in seen if is_training]
    validation = [x for is_training, x in seen if not is_training]
    assert training and validation
    assert all(x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1 for x in training)
    assert all(x.dtype == torch.uint8 for x in validation)
    assert all(torch.equal(x, val.data["image"][:len(x)]) for x in validation)  # validated on the data as it is


# -- weight penalties ------------------------------------------------------------------------------
def test_l1_term_is_the_weight_times_the_sum_of_absolute_weights(make_raw, tiny_config):
    config = tiny_config("mvae", names=("image", "label", "vector"))
    config["modalities"]["image"].update(arch="resnet", shape=[1, 8, 8], channels=[4])  # GroupNorm layers too
    model = build_model(config, make_raw(16, names=("image", "label", "vector")))
    module = OmniModule(model, TrainConfig(l1_weight=0.01))
    weights = penalized_weights(model)
    norms = (nn.GroupNorm, nn.LayerNorm)
    expected = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    assert {id(w) for w in weights} == {id(w) for w in expected}
    assert not any(w is m.weight for m in model.modules() if isinstance(m, norms) for w in weights)
    assert not any(w is p for name, p in model.named_parameters() if name.endswith(("bias", "log_scale"))
                   for w in weights)
    base = LossOutput(torch.tensor(2.0), {"loss": torch.tensor(2.0)})
    out = module.penalized(base)
    by_hand = 0.01 * sum(float(w.detach().abs().sum()) for w in expected)
    assert math.isclose(float(out.terms["l1"]), by_hand, rel_tol=1e-5)
    assert math.isclose(float(out.total.detach()), 2.0 + by_hand, rel_tol=1e-5)
    assert float(out.terms["loss"]) == 2.0  # the objective, comparable with val/loss
    assert out.total.requires_grad
    assert OmniModule(model, TrainConfig()).penalized(base) is base  # off: no term


def test_l1_gradient_is_the_weight_times_the_sign(make_raw, tiny_config):
    model = build_model(tiny_config("mvae"), make_raw(16))
    module = OmniModule(model, TrainConfig(l1_weight=0.5))
    module.penalized(LossOutput(torch.tensor(0.0), {})).total.backward()
    w = penalized_weights(model)[0]
    assert torch.equal(w.grad, 0.5 * w.detach().sign())


def test_weight_decay_reaches_the_optimiser(make_raw, tiny_config):
    model = build_model(tiny_config("mvae"), make_raw(16))
    optimiser = OmniModule(model, TrainConfig(weight_decay=0.03, lr=0.002)).configure_optimizers()
    assert type(optimiser) is torch.optim.Adam  # coupled L2 (Adam), not AdamW's decoupled decay
    assert [g["weight_decay"] for g in optimiser.param_groups] == [0.03]
    assert optimiser.param_groups[0]["lr"] == 0.002


# -- all together ----------------------------------------------------------------------------------
def test_a_run_with_every_control_on_trains(monkeypatch, make_raw, tmp_path):
    raw = make_raw(48, names=("image", "label", "vector"))
    monkeypatch.setattr(omnivae.run, "load_source", lambda config: raw)
    modalities = {"image": {"arch": "conv", "channels": [4, 8], "dropout": 0.2},
                  "label": {"hidden": [8], "dropout": 0.2}, "vector": {"hidden": [8], "dropout": 0.2}}
    config = {"data": {"source": "tiny", "test_fraction": 0.1},
              "model": {"model": "mopoe", "latent_dim": 4, "modalities": modalities},
              "train": {**TRAIN, "max_epochs": 3, "patience": 1, "val_fraction": 0.2, "weight_decay": 1e-4,
                        "l1_weight": 1e-4, "augment": {"shift": 1, "flip": True, "noise": 0.05}}}
    result = train_run(config, tmp_path / "run")
    assert result.config.train.augment.flip and result.config.train.l1_weight == 1e-4
    assert result.model.modalities["image"].spec.dropout == 0.2
    rows = [r for f in RunFolder(tmp_path / "run").metrics_files() for r in csv.DictReader(open(f))]
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    l1 = [float(r["train/l1_epoch"]) for r in rows if r.get("train/l1_epoch")]
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert losses and l1 and val
    assert all(math.isfinite(v) for v in losses + l1 + val) and all(v > 0 for v in l1)
