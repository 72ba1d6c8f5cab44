"""VAE and beta-VAE: the objective against its formula (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.models import at_seed, batch_of, build, kl_std, normal

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vae_loss_matches_formula(tiny_config, make_tensors):
    model = build(tiny_config, "vae", ("image",), beta=1.5)
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch, seed=3)
    x = batch.data["image"]
    torch.manual_seed(3)
    q = model.modalities["image"].encode(x)
    z = q.mu + torch.randn(1, *q.mu.shape) * torch.exp(0.5 * q.logvar)
    logits = model.modalities["image"].decoder(z[0])
    rec = -F.binary_cross_entropy_with_logits(logits, x.flatten(1).float() / 255, reduction="none").sum(-1)
    want = -(rec.mean() - 1.5 * kl_std(normal(q.mu, q.logvar)).mean())
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
