"""Free bits (Kingma et al. 2016): the objective's KL is sum_d max(free_bits, batch-mean KL_d),
the logged kl stays the true KL, and free_bits = 0 leaves every objective unchanged."""
from __future__ import annotations

import pytest
import torch

from omnivae import Batch, ConfigError, build_model
from omnivae.distributions import Gaussian, free_bits_kl, kl_objective
from omnivae.fusion import mixture_of_products, product_of_experts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kl_per_dim_sums_to_kl():
    g = Gaussian(torch.randn(5, 4), torch.randn(5, 4))
    per_dim = g.kl_standard_per_dim()
    assert per_dim.shape == (5, 4) and (per_dim >= 0).all()
    assert torch.allclose(per_dim.sum(-1), g.kl_standard())


def test_free_bits_kl_is_the_formula_with_its_gradient():
    kl = torch.tensor([[0.1, 2.0, 0.5], [0.3, 1.0, 0.5], [0.2, 3.0, 0.2]], requires_grad=True)  # [B=3, D=3]
    floor = 0.4  # batch means 0.2, 2.0, 0.4: dim 0 below, dim 1 above, dim 2 on the floor
    out = free_bits_kl(kl, None, floor)
    assert out.shape == (3,)
    want = kl.detach().mean(0).clamp_min(floor).sum()
    assert out.mean().item() == pytest.approx(want.item())
    out.mean().backward()
    assert torch.allclose(kl.grad, torch.tensor([[0.0, 1 / 3, 0.0]] * 3))  # only the dim above the floor


def test_free_bits_kl_masks_examples():
    kl = torch.tensor([[0.0, 1.0], [0.2, 1.0], [9.0, 9.0]])
    valid = torch.tensor([True, True, False])
    out = free_bits_kl(kl, valid, 0.5)  # valid means 0.1, 1.0 -> floor dim 0
    assert out[:2].tolist() == pytest.approx([1.5, 1.5])
    assert out[2].item() == pytest.approx(18.0)  # an invalid example keeps its plain KL
    assert (out[:2].mean()).item() == pytest.approx(max(0.5, 0.1) + max(0.5, 1.0))
    with pytest.raises(ValueError, match="valid_mask"):
        free_bits_kl(kl, valid[:2], 0.5)
    with pytest.raises(ValueError, match="free_bits"):
        free_bits_kl(kl, valid, -0.1)


def test_kl_objective_at_zero_is_exactly_the_kl():
    g = Gaussian(torch.randn(2, 6, 3), torch.randn(2, 6, 3))
    assert torch.equal(kl_objective(g, torch.ones(2, 6, dtype=torch.bool), 0.0), g.kl_standard())
    assert torch.equal(free_bits_kl(g.kl_standard_per_dim(), None, 0.0), g.kl_standard_per_dim().sum(-1))


# -- in the models --------------------------------------------------------------------------------
def _posterior_kl_per_dim(model, batch) -> list[torch.Tensor]:
    """Per-dim KL [B,D] of each KL term the model's objective averages over the batch."""
    name = model.config.model
    if name == "vae":
        m = model.names[0]
        return [model.modalities[m].encode(batch.data[m]).kl_standard_per_dim()]
    mu, logvar, present = model.encode_unimodal(batch)
    if name == "mvae":
        weights = model.subsets(mu.device).unsqueeze(-1) & present.unsqueeze(0)
        q = product_of_experts(mu, logvar, weights, prior_expert=True)
        return list(q.kl_standard_per_dim())  # one term per subset
    q, valid = mixture_of_products(mu, logvar, present, model.subset_table, model.config.prior_expert)
    v = valid.to(mu.dtype).unsqueeze(-1)
    return [(q.kl_standard_per_dim() * v).sum(0) / v.sum(0)]  # the subset mixture's KL per example


@pytest.fixture
def model_and_batch(tiny_config, make_tensors):
    def build(name, **options):
        names = ("image",) if name == "vae" else ("image", "label")
        torch.manual_seed(0)
        model = build_model(tiny_config(name, names, latent_dim=6, **options))
        data = make_tensors(32, 0)
        return model, Batch({k: data[k] for k in names})
    return build


def _loss(model, batch, free_bits, seed=0):
    model.config = model.config.model_copy(update={"free_bits": free_bits})
    torch.manual_seed(seed)
    return model.loss(batch)


@pytest.mark.parametrize("name", ["vae", "mvae", "mopoe"])
def test_free_bits_change_the_objective_by_the_formula(model_and_batch, name):
    model, batch = model_and_batch(name, beta=1.5)
    plain = _loss(model, batch, 0.0)
    assert plain.total.item() == pytest.approx(-(plain.terms["rec"] - 1.5 * plain.terms["kl"]).item(), rel=1e-6)
    with torch.no_grad():
        terms = _posterior_kl_per_dim(model, batch)
    means = torch.cat([t.mean(0) for t in terms])
    floor = float(means.median())  # some dims below the floor, some above
    assert (means < floor).any() and (means > floor).any()
    out = _loss(model, batch, floor)
    fb_kl = sum(float(t.mean(0).clamp_min(floor).sum()) for t in terms)
    assert out.terms["kl"].item() == pytest.approx(plain.terms["kl"].item(), rel=1e-6)  # logged: the true KL
    assert out.terms["rec"].item() == pytest.approx(plain.terms["rec"].item(), rel=1e-6)
    assert out.total.item() == pytest.approx(-(plain.terms["rec"].item() - 1.5 * fb_kl), rel=1e-5)
    assert out.total.item() > plain.total.item()  # the floor only ever adds


@pytest.mark.parametrize("name", ["vae", "mvae", "mopoe"])
def test_kl_below_the_floor_gets_no_gradient(model_and_batch, name):
    model, batch = model_and_batch(name)
    params = [p for p in model.parameters() if p.requires_grad]
    floored = _loss(model, batch, 1e3)  # every dim far below the floor: the KL term is a constant
    n_terms = 3 if name == "mvae" else 1  # mvae: the joint and two unimodal ELBOs
    assert floored.total.item() == pytest.approx(-(floored.terms["rec"].item() - n_terms * 6 * 1e3), rel=1e-6)
    grads = torch.autograd.grad(floored.total, params, allow_unused=True)
    model.config = model.config.model_copy(update={"free_bits": 0.0})
    torch.manual_seed(0)
    rec_only = model.loss(batch, beta_scale=0.0)  # same noise, no KL term at all
    want = torch.autograd.grad(rec_only.total, params, allow_unused=True)
    for g, w in zip(grads, want):
        g = torch.zeros(1) if g is None else g
        w = torch.zeros(1) if w is None else w
        assert torch.allclose(g, w, atol=1e-6)


def test_free_bits_config_is_checked(tiny_config):
    with pytest.raises(ConfigError, match="free_bits"):
        build_model(tiny_config("mvae", free_bits=-1.0))
    with pytest.raises(ConfigError, match="free_bits"):
        build_model(tiny_config("mmvae", free_bits=0.5))  # an objective that does not apply it
    model = build_model(tiny_config("mopoe", free_bits=0.25))
    assert model.config.to_dict()["free_bits"] == 0.25
    assert build_model(tiny_config("mmvae")).config.free_bits == 0.0
