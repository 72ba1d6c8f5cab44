"""MoPoE-VAE: the KL term against its formula, over the subsets valid for each example (the
shared contract is in test_model_suite.py; the batched subsets in test_models_moe_subsets.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from helpers.models import at_seed, batch_of, build, kl_std

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mopoe_kl_term_averages_valid_subsets(tiny_config, make_tensors):
    model = build(tiny_config, "mopoe")
    mask = {"label": torch.tensor([True, False] * 8)}
    batch = batch_of(model, make_tensors(16), mask)
    out = at_seed(model, batch)
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
