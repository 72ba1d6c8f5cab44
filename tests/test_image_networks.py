"""Image networks: the residual arch (shapes for odd sizes, training, gradients, save/load) and
arch "auto", which is resolved (and stored resolved) when the spec is built."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import omnivae
from omnivae import build_model
from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.io import CONFIG_FILE
from omnivae.modalities import ImageSpec, build_modality, parse_spec
from omnivae.modalities.image import RESNET_MIN_SIDE, ResNetDecoder, ResNetEncoder

pytestmark = pytest.mark.usefixtures("one_thread")

D = 4
SMALL = {"channels": [8, 16, 16]}  # narrow widths: the tests time the logic, not the network


def resnet(shape, **options):
    return build_modality("img", ImageSpec(shape=shape, arch="resnet", **{**SMALL, **options}), D)


def random_images(n, shape, seed=0):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def blob_images(n, shape, seed=0):
    """uint8 images with one bright square each (learnable, unlike noise)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    x = np.zeros((n, c, h, w), np.uint8)
    for i in range(n):
        y0, x0 = rng.integers(0, h - h // 3), rng.integers(0, w - w // 3)
        x[i, rng.integers(c), y0:y0 + h // 3, x0:x0 + w // 3] = 255
    return x


# -- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 30, 40), (2, 17, 9)])
def test_resnet_shapes(shape):
    torch.manual_seed(0)
    mod = resnet(shape)
    assert isinstance(mod.encoder, ResNetEncoder) and isinstance(mod.decoder, ResNetDecoder)
    x = random_images(2, shape)
    q = mod.encode(x)
    assert q.mu.shape == q.logvar.shape == (2, D)
    z = torch.randn(5, 2, D)
    ll = mod.log_likelihood(z, x)  # the decoder runs once on all 10 codes
    assert ll.shape == (5, 2) and torch.isfinite(ll).all() and (ll <= 0).all()
    assert mod.decode(torch.randn(3, D)).shape == (3, *shape)
    out = mod.generate(torch.randn(3, D))
    assert out.shape == (3, *shape) and out.is_contiguous() and 0 <= out.min() and out.max() <= 1
    sample = mod.generate(torch.randn(3, D), sample=True)
    assert sample.shape == (3, *shape) and set(sample.unique().tolist()) <= {0.0, 1.0}


def test_stage_count_follows_the_size_capped_by_channels():
    """Downsampling stops at about 4x4, or when the widths run out; the decoder retraces the sizes."""
    deep = resnet((3, 64, 64), channels=[8] * 6)
    assert deep.encoder.sizes == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert resnet((3, 64, 64), channels=[8, 8]).encoder.sizes == [(64, 64), (32, 32), (16, 16)]
    mod = resnet((1, 30, 40), channels=[8, 8, 8, 8, 8])
    assert mod.encoder.sizes == [(30, 40), (15, 20), (8, 10), (4, 5)]
    assert [s.size for s in mod.decoder.stages] == [(8, 10), (15, 20), (30, 40)]
    assert resnet((1, 4, 4)).decode(torch.randn(2, D)).shape == (2, 1, 4, 4)  # at least one stage


def test_blocks_option_adds_residual_blocks_and_no_batchnorm():
    one, two = resnet((3, 32, 32), blocks=1), resnet((3, 32, 32), blocks=2)
    count = lambda m: sum(type(x).__name__ == "ResBlock" for x in m.modules())  # noqa: E731
    assert count(one) == 6 and count(two) == 12  # 3 stages, encoder and decoder
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in two.modules())
    assert not any(isinstance(x, torch.nn.ConvTranspose2d) for x in two.modules())


def test_outputs_do_not_depend_on_the_rest_of_the_batch():
    """No batch statistics: an example's posterior is the same alone or next to others."""
    torch.manual_seed(0)
    mod = resnet((3, 32, 32)).train()
    x = random_images(6, (3, 32, 32))
    assert torch.allclose(mod.encode(x).mu[:1], mod.encode(x[:1]).mu, atol=1e-5)


def test_bf16_autocast_scores_stay_float32():
    torch.manual_seed(0)
    mod = resnet((3, 30, 40))
    x = random_images(2, (3, 30, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = mod.encode(x)
        ll = mod.log_likelihood(q.mu.unsqueeze(0), x)
    assert q.mu.dtype == ll.dtype == torch.float32 and torch.isfinite(ll).all()
    with torch.no_grad():
        full = mod.log_likelihood(mod.encode(x).mu.unsqueeze(0), x)
    assert torch.allclose(ll, full, rtol=0.05)


# -- arch "auto" ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, want", [((1, 28, 28), "conv"), ((3, 32, 32), "conv"), ((3, 47, 200), "conv"),
                                         ((3, RESNET_MIN_SIDE, RESNET_MIN_SIDE), "resnet"), ((3, 64, 64), "resnet"),
                                         ((1, 64, 96), "resnet")])
def test_auto_resolves_from_the_shape_and_is_stored_resolved(shape, want):
    spec = ImageSpec(shape=shape)  # arch "auto" is the default
    assert spec.arch == want
    assert spec.channels == ([16, 32, 64] if want == "resnet" else [32, 64, 128])
    dumped = spec.to_dict()
    assert dumped["arch"] == want and "auto" not in json.dumps(dumped) and dumped["channels"] == spec.channels
    again = parse_spec("img", {"kind": "image", "shape": list(shape), "arch": "auto"})
    assert again.arch == want and ImageSpec.from_dict(dumped) == spec
    encoder = build_modality("img", spec, D).encoder
    assert type(encoder).__name__ == ("ResNetEncoder" if want == "resnet" else "ConvEncoder")


def test_explicit_arch_and_channels_are_kept():
    assert ImageSpec(shape=(3, 64, 64), arch="conv").arch == "conv"
    assert ImageSpec(shape=(3, 64, 64), arch="conv").channels == [32, 64, 128]
    assert ImageSpec(shape=(1, 28, 28), arch="resnet", channels=[4, 8]).channels == [4, 8]
    old = {"kind": "image", "shape": [3, 64, 64], "arch": "conv", "channels": [32, 64, 128], "hidden": [512],
           "likelihood": "bernoulli", "scale": 0.1, "learn_scale": False}  # a config saved before "resnet"
    spec = parse_spec("img", old)
    assert spec.arch == "conv" and spec.channels == [32, 64, 128] and spec.blocks == 1


def test_model_config_records_the_resolved_arch(tmp_path):
    raw = RawData({"image": blob_images(8, (3, 48, 48))}, {"image": "image"})
    image = {"kind": "image", "shape": [3, 48, 48], "channels": [4, 8]}  # arch left to "auto"
    model = build_model({"model": "vae", "latent_dim": D, "modalities": {"image": image}}, raw)
    assert model.config.modalities["image"].arch == "resnet"
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert '"auto"' not in json.dumps(saved) and '"resnet"' in json.dumps(saved)


# -- training and files ------------------------------------------------------------------------------
def tiny_resnet_vae(shape=(3, 32, 32), n=16, **options):
    raw = RawData({"image": blob_images(n, shape)}, {"image": "image"})
    spec = {"kind": "image", "shape": list(shape), "arch": "resnet", "channels": [8, 16, 16], **options}
    model = build_model({"model": "vae", "latent_dim": 8, "modalities": {"image": spec}}, raw)
    return model, TensorData.from_raw(model, raw).batch()


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model, batch = tiny_resnet_vae((3, 30, 40), n=6, blocks=2)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(2):  # move the weights (and the zero-initialised norms) away from their init
        opt.zero_grad()
        model.loss(batch).total.backward()
        opt.step()
    model.eval()
    model.save(tmp_path / "model")
    loaded = omnivae.load(tmp_path / "model")
    assert loaded.config == model.config and loaded.config.modalities["image"].arch == "resnet"
    assert torch.equal(loaded.encode(batch), model.encode(batch))
    a, b = model.reconstruct(batch, raw=True)["image"], loaded.reconstruct(batch, raw=True)["image"]
    assert a.shape == (6, 3, 30, 40) and torch.equal(a, b)
    z = torch.randn(3, 8)
    assert torch.equal(model.decode(z, raw=True)["image"], loaded.decode(z, raw=True)["image"])


def test_tiny_resnet_vae_overfits_a_batch():
    torch.manual_seed(0)
    model, batch = tiny_resnet_vae((3, 32, 32), n=16)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = model.loss(batch).total
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.2 * first, (first, last)
    model.eval()
    recon = model.reconstruct(batch, raw=True)["image"]
    target = batch.data["image"].float() / 255
    assert float(((recon - target) ** 2).mean()) < 0.5 * float(((target.mean(0) - target) ** 2).mean())


def test_gradients_reach_the_first_encoder_layer():
    torch.manual_seed(0)
    model, batch = tiny_resnet_vae((1, 28, 28), n=4)
    model.loss(batch).total.backward()
    enc = model.modalities["image"].encoder
    first = enc.convs[0][0]  # the stem conv
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 1
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_arch_is_a_config_error():
    with pytest.raises(omnivae.ConfigError, match="arch"):
        parse_spec("x", {"kind": "image", "shape": [1, 8, 8], "arch": "transformer"})
    with pytest.raises(omnivae.ConfigError, match="blocks"):
        parse_spec("x", {"kind": "image", "shape": [1, 8, 8], "arch": "resnet", "blocks": 0})
