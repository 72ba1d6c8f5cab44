"""MMVAE / MMVAE+ draws for examples with no modality, MMVAE's k option and MVAE's random
extra subsets."""
from __future__ import annotations

import itertools

import pytest
import torch

from omnivae import ConfigError, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def vectors(model: str, n: int = 2, **options) -> dict:
    names = "abcdefgh"[:n]
    return {"model": model, "latent_dim": 3,
            "modalities": {m: {"kind": "vector", "dim": 2, "hidden": [8]} for m in names}, **options}


# -- MMVAE / MMVAE+: no modality present -> the prior, for fuse and draw alike -------------------------
@pytest.mark.parametrize("family, options", [("mmvae", {}), ("mmvae_plus", {"private_dim": 2})])
def test_draw_with_no_modality_present_is_a_draw_from_the_prior(family, options):
    torch.manual_seed(0)
    model = build_model(vectors(family, **options)).eval()
    m, b, width = 2, 4000, model.modality_latent_dim(model.config)
    mu = torch.full((m, b, width), 5.0)  # what placeholder inputs could encode to: far from N(0, I)
    logvar = torch.full((m, b, width), -4.0)
    present = torch.zeros(m, b, dtype=torch.bool)
    present[0, :10] = True  # a few rows with a modality: those keep drawing from it
    z = model.draw(mu, logvar, present, 3)  # [3,B,D]
    assert z.shape == (3, b, model.config.latent_dim)
    empty = z[:, 10:].reshape(-1, z.shape[-1])
    assert empty.mean(0).abs().max() < 0.05 and (empty.std(0) - 1).abs().max() < 0.05
    assert (z[:, :10] - 5.0).abs().max() < 1.0
    fused = model.fuse(mu, logvar, present)
    assert (fused.mu[10:] == 0).all() and (fused.logvar[10:] == 0).all()


def test_user_api_samples_from_the_prior_when_every_modality_is_masked():
    torch.manual_seed(0)
    model = build_model(vectors("mmvae")).eval()
    for mod in model.modalities.values():  # placeholder inputs would encode far from the prior
        torch.nn.init.constant_(mod.encoder[-1].bias, 4.0)
    n = 3000
    x = {"a": torch.zeros(n, 2), "b": torch.zeros(n, 2)}
    none = {"a": torch.zeros(n, dtype=torch.bool), "b": torch.zeros(n, dtype=torch.bool)}
    z = model.encode(x, mask=none, sample=True)
    assert z.mean(0).abs().max() < 0.1 and (z.std(0) - 1).abs().max() < 0.1
    assert (model.encode(x, mask=none) == 0).all()


# -- k >= 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mmvae", "mmvae_plus"])
@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_is_a_config_error_naming_the_key(family, k):
    with pytest.raises(ConfigError, match=r"(?m)^\s*k: .*(>= 1|greater than or equal to 1)"):
        build_model(vectors(family, k=k))


def test_iwae_k_below_one_is_a_config_error_naming_the_key():
    cfg = vectors("iwae", n=1, k=0)
    with pytest.raises(ConfigError, match=r"(?m)^\s*k: .*>= 1"):
        build_model(cfg)


# -- MVAE's extra subsets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [3, 4, 5])
def test_mvae_extra_subsets_hold_at_least_two_modalities(m):
    torch.manual_seed(0)
    model = build_model(vectors("mvae", n=m, extra_subsets=4000))
    rows = model.subsets(torch.device("cpu"))
    first_extra = 1 + m  # the joint row, then the unimodal rows
    assert rows.shape == (first_extra + 4000, m)
    extra = rows[first_extra:]
    assert (extra.sum(1) >= 2).all()
    drawn = {tuple(r) for r in extra.tolist()}
    every = {s for s in itertools.product([False, True], repeat=m) if sum(s) >= 2}
    assert drawn == every  # every subset of size >= 2 turns up
    if m == 3:  # uniform over the 4 subsets of size >= 2
        counts = torch.tensor([sum(1 for r in extra.tolist() if tuple(r) == s) for s in sorted(every)])
        assert ((counts / 4000 - 0.25).abs() < 0.03).all()
