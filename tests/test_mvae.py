"""MVAE: the KL term against its formula (joint plus unimodal sub-sampled ELBOs) and mean
generation (the shared contract is in test_model_suite.py)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from helpers.models import at_seed, batch_of, build, kl_std, pick

pytestmark = pytest.mark.usefixtures("one_thread")


def poe_with_prior(mus, logvars):
    precision = 1.0 + sum(torch.exp(-lv) for lv in logvars)
    mean = sum(m * torch.exp(-lv) for m, lv in zip(mus, logvars)) / precision
    return Normal(mean, precision.rsqrt())


def test_mvae_kl_term_is_sum_over_joint_and_unimodal_subsets(tiny_config, make_tensors):
    model = build(tiny_config, "mvae")
    batch = batch_of(model, make_tensors(16))
    out = at_seed(model, batch)
    qs = [model.modalities[n].encode(batch.data[n]) for n in model.names]
    joint = poe_with_prior([q.mu for q in qs], [q.logvar for q in qs])
    singles = [poe_with_prior([q.mu], [q.logvar]) for q in qs]
    want = (kl_std(joint) + sum(kl_std(s) for s in singles)).mean()
    assert out.terms["kl"].item() == pytest.approx(want.item(), rel=1e-5)


def test_mean_generation_decodes_the_posterior_mean(tiny_config, make_tensors):
    model = build(tiny_config, "mvae").eval()
    data = pick(make_tensors(4), model.names)
    z = model.encode(data, given=["label"])
    got = model.generate(data, given=["label"], targets=["image"], mean=True)["image"]
    want = torch.sigmoid(model.modalities["image"].decoder(z)).view(4, 1, 8, 8)
    torch.testing.assert_close(got, want)
