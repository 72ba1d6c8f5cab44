"""Adversarial sharpening pieces: PatchGAN discriminator shapes, hinge losses by hand, a
discriminator that learns to tell real from fake, and gradients reaching an image decoder."""
from __future__ import annotations

import pytest
import torch

from omnivae import InputError, build_model
from omnivae.adversarial import PatchDiscriminator, decoded_images, discriminator_hinge, generator_hinge

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape, patches", [((3, 32, 32), (8, 8)), ((1, 28, 28), (7, 7)), ((1, 8, 8), (2, 2))])
def test_patch_logits_shape(shape, patches):
    d = PatchDiscriminator(shape[0])
    assert d(torch.rand(2, *shape)).shape == (2, 1, *patches)
    assert d(torch.randint(0, 256, (2, *shape), dtype=torch.uint8)).shape == (2, 1, *patches)
    with pytest.raises(InputError, match=rf"images \[batch, {shape[0]}, H, W\]"):
        d(torch.rand(2, shape[0] + 1, *shape[1:]))


def test_hinge_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> 2.5/3; relu(1 + fake) = [0, 1, 2] -> 1
    assert float(discriminator_hinge(real, fake)) == pytest.approx(2.5 / 3 + 1.0)
    assert float(generator_hinge(fake)) == pytest.approx(1.0 / 3)


def test_discriminator_learns_real_from_fake():
    torch.manual_seed(0)
    d = PatchDiscriminator(1, channels=[8, 16])
    opt = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.9))
    real = torch.zeros(32, 1, 16, 16)
    real[:, :, 4:12, 4:12] = 1.0  # sharp squares
    fake = torch.rand(32, 1, 16, 16) * 0.3 + 0.35  # blurry grey
    first = float(discriminator_hinge(d(real), d(fake)).detach())
    for _ in range(60):
        loss = discriminator_hinge(d(real), d(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    with torch.no_grad():
        assert float(d(real).mean()) > 0 > float(d(fake).mean())


def test_generator_term_reaches_the_image_decoder(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config("mopoe", ("image", "label")))
    d = PatchDiscriminator(1, channels=[8])
    fake = decoded_images(model, "image", torch.randn(4, 4))
    assert fake.shape == (4, 1, 8, 8) and 0 <= float(fake.detach().min()) and float(fake.detach().max()) <= 1
    generator_hinge(d(fake)).backward()
    grads = [p.grad for p in model.modalities["image"].decoder.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in model.modalities["label"].parameters())
    with pytest.raises(InputError, match="not an image"):
        decoded_images(model, "label", torch.randn(2, 4))


def test_adversarial_images_for_a_batch(tiny_config, make_tensors):
    from omnivae import Batch
    from omnivae.adversarial import adversarial_images

    torch.manual_seed(0)
    model = build_model(tiny_config("mopoe", ("image", "label")))
    data = make_tensors(6)
    batch = Batch({"image": data["image"], "label": data["label"]},
                  {"image": torch.tensor([True, True, False, True, True, True])})
    fake, real = adversarial_images(model, batch, "image")
    assert fake.shape == (12, 1, 8, 8) and fake.requires_grad
    assert real.shape == (5, 1, 8, 8) and real.dtype == torch.float32 and float(real.max()) <= 1
    with pytest.raises(InputError, match="no modality 'text'"):
        adversarial_images(model, batch, "text")


def test_hinge_over_no_real_images_is_the_fake_term():
    fake = torch.tensor([-2.0, 0.0, 1.0])
    assert float(discriminator_hinge(torch.zeros(0, 1, 2, 2), fake)) == pytest.approx(1.0)


@pytest.mark.parametrize("family, options", [("mvae", {}), ("mmvae", {}), ("jmvae", {}),
                                             ("mmvae_plus", {"private_dim": 2}),
                                             ("cvae", {"target": "image", "conditions": ["label"]})])
def test_adversarial_images_for_every_code_width(tiny_config, make_tensors, family, options):
    """mmvae_plus decoders also take the private code, cvae's the condition embedding: the
    fakes are decoded from full-width codes, and the term reaches the decoder."""
    from omnivae import Batch
    from omnivae.adversarial import adversarial_images

    torch.manual_seed(0)
    model = build_model(tiny_config(family, ("image", "label"), **options))
    data = make_tensors(6)
    batch = Batch({"image": data["image"], "label": data["label"]},
                  {"image": torch.tensor([True, False, True, True, True, True])})
    fake, real = adversarial_images(model, batch, "image")
    assert fake.shape == (12, 1, 8, 8) and real.shape == (5, 1, 8, 8)
    generator_hinge(PatchDiscriminator(1, channels=[8])(fake)).backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.modalities["image"].decoder.parameters())


def test_cvae_fakes_are_its_target_only(tiny_config, make_tensors):
    from omnivae import Batch
    from omnivae.adversarial import adversarial_codes

    model = build_model(tiny_config("cvae", ("image", "label"), target="label", conditions=["image"]))
    data = make_tensors(4)
    mu, logvar, present = model.encode_unimodal(Batch({"image": data["image"], "label": data["label"]}, {}))
    with pytest.raises(InputError, match="only generates its target 'label'"):
        adversarial_codes(model, mu, logvar, present, "image")


def test_fakes_come_from_what_the_model_declares(tiny_config, make_tensors):
    """adversarial_codes asks the model (adversarial_problem, decoder_codes); it never checks
    the model's class, so any model, including a new one, states its own needs."""
    from omnivae import Batch
    from omnivae.adversarial import adversarial_codes

    model = build_model(tiny_config("mvae", ("image", "label")))
    data = make_tensors(4)
    mu, logvar, present = model.encode_unimodal(Batch({"image": data["image"], "label": data["label"]}, {}))
    calls = []

    def decoder_codes(name, z, mu, logvar, present, from_prior=False):
        calls.append((name, from_prior))
        return torch.cat([z, torch.full((len(z), 1), 7.0)], -1)
    model.decoder_codes = decoder_codes
    codes = adversarial_codes(model, mu, logvar, present, "image")
    assert calls == [("image", False), ("image", True)] and codes.shape == (8, 5) and (codes[:, -1] == 7).all()
    model.adversarial_problem = lambda name: "this model keeps its images as they are"
    with pytest.raises(InputError, match="keeps its images as they are"):
        adversarial_codes(model, mu, logvar, present, "image")
