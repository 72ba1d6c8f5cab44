"""The image modality's ladder branch: private latent layers between the model's code and the
decoder (omnivae.modalities.ladder_branch). The model contract for models with such a branch
runs in test_model_suite.py (its `image_spec` variants)."""
from __future__ import annotations

import pytest
import torch

from omnivae import Batch
from omnivae.distributions import kl_normal
from omnivae.modalities.image import ImageModality, ImageSpec
from omnivae.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def image(ladder, arch="mlp", shape=(1, 8, 8), latent=4) -> ImageModality:
    torch.manual_seed(0)
    return ImageModality("image", ImageSpec(shape=shape, arch=arch, hidden=[32], ladder=ladder), latent)


def pixels(n=6, shape=(1, 8, 8), seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_log_likelihood_is_the_elbo_over_the_private_layers():
    """log p(x | z_1) at a draw from q(z_1 | z, x) minus KL(q || p(z_1 | z)), recomputed by hand."""
    mod, x = image([6]), pixels()
    z = torch.randn(2, 6, 4)  # two codes per example
    torch.manual_seed(1)
    got = mod.log_likelihood(z, x)
    torch.manual_seed(1)
    branch = mod.ladder
    p = branch.down[0](z)
    mu_p, logvar_p = p.chunk(2, -1)
    offset = branch.estimates(mod.features(x))[0]
    mu_q, logvar_q = mu_p + offset.mu, logvar_p + offset.logvar
    z1 = mu_q + torch.randn_like(mu_q) * torch.exp(0.5 * logvar_q)
    logits = mod.decoder(z1.reshape(-1, 6)).reshape(2, 6, -1)
    target = mod.features(x).reshape(6, -1)
    rec = -torch.nn.functional.binary_cross_entropy_with_logits(logits, target.expand_as(logits),
                                                                reduction="none").sum(-1)
    want = rec - kl_normal(mu_q, logvar_q, mu_p, logvar_p)
    assert got.shape == (2, 6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_decoding_takes_conditional_means_unless_sampling():
    mod = image([6, 5])
    z = torch.randn(3, 4)
    assert mod.decoder[0].in_features == 6  # the decoder reads the bottom private layer
    torch.testing.assert_close(mod.generate(z), mod.generate(z))
    torch.manual_seed(0)
    a = mod.generate(z, sample=True)
    torch.manual_seed(1)
    b = mod.generate(z, sample=True)
    assert a.shape == b.shape == (3, 1, 8, 8) and not torch.equal(a, b)


def test_conv_branch_has_its_own_narrow_bottom_up_network():
    mod = image([8], arch="conv", shape=(1, 28, 28))
    enc = sum(p.numel() for p in mod.encoder.parameters())
    up = sum(p.numel() for p in mod.ladder.up.parameters())
    assert 0 < up < enc / 2
    assert mod.log_likelihood(torch.randn(5, 4), pixels(5, (1, 28, 28))).shape == (5,)


def test_the_private_layers_train_and_hold_information():
    """A VAE with a two-dimensional code and a branch below it: after training, the private
    layer's KL (what it holds beyond the code) is clearly positive and the bound improves."""
    torch.manual_seed(0)
    model = build_model({"model": "vae", "latent_dim": 2, "modalities": {
        "image": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp", "hidden": [64], "ladder": [8]}}})
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)  # a bright 3x3 block at one of 36 places
    for i, (r, c) in enumerate(torch.randint(0, 6, (64, 2), generator=g).tolist()):
        x[i, 0, r:r + 3, c:c + 3] = 255
    batch = Batch({"image": x}, {})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        opt.zero_grad()
        out = model.loss(batch)
        out.total.backward()
        opt.step()
        first = float(out.total.detach()) if first is None else first
    assert float(out.total.detach()) < 0.5 * first
    mod = model.modalities["image"]
    q = model.encode_unimodal(batch)
    z = q[0][0]
    with torch.no_grad():
        _, kl = mod.ladder.posterior_bottom(z, mod.features(x))
    assert float(kl.mean()) > 1.0


def test_stacked_ae_drops_the_branch():
    model = build_model({"model": "stacked_ae", "layers": [16, 4], "latent_dim": 4, "modalities": {
        "image": {"kind": "image", "shape": [1, 8, 8], "ladder": [8]}}})
    assert model.config.modalities["image"].ladder == [] and model.modalities["image"].ladder is None
