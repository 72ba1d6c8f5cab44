"""Normalising-flow sampling prior: fits curved 2-D point sets far better than a Gaussian, is fitted
on posterior draws (not means), keeps its config to its own options, attaches to a model's
sampling, survives save/load bit for bit, and is selectable in a run config."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from omnivae import ConfigError, build_model
from omnivae.distributions import log_normal
from omnivae.io import load_model, save_model
from omnivae.priors import FlowPrior, PriorConfig, build_prior, fit_prior

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"transforms": 2, "hidden": [32, 32], "steps": 300, "lr": 3e-3}


def two_moons(n: int, seed: int) -> torch.Tensor:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=seed)
    return torch.from_numpy(x).float()


def ring(n: int, seed: int) -> torch.Tensor:
    """Points on a circle of radius 2 around (1, -1), radial noise 0.1."""
    gen = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(n, generator=gen)
    radius = 2.0 + 0.1 * torch.randn(n, generator=gen)
    return torch.stack([1 + radius * angle.cos(), -1 + radius * angle.sin()], 1)


def moment_matched_log_prob(train: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, cov) of the Gaussian with train's mean and covariance."""
    dist = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    return dist.log_prob(x)


def nearest_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over a's points of the distance to the nearest point of b."""
    return float(torch.cdist(a, b).min(1).values.mean())


@pytest.mark.parametrize("shape", [two_moons, ring])
def test_flow_fits_a_curved_point_set_better_than_a_gaussian(shape):
    train, held_out = shape(2000, 0), shape(1000, 1)
    torch.manual_seed(0)
    flow = FlowPrior(2, {"kind": "flow", **SMALL})
    unfitted = float(flow.log_prob(held_out).mean())  # N(0, I) until fitted
    flow.fit(train, seed=0)
    gaussian = float(moment_matched_log_prob(train, held_out).mean())
    fitted = float(flow.log_prob(held_out).mean())
    assert unfitted < gaussian < fitted - 0.5, (unfitted, gaussian, fitted)  # nats per point
    samples = flow.sample(1000, generator=torch.Generator().manual_seed(2))
    normal = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T)).sample((1000,))
    floor = nearest_distance(shape(1000, 3), held_out)  # fresh real points: what a perfect sampler gets
    flow_gap, gauss_gap = nearest_distance(samples, held_out), nearest_distance(normal, held_out)
    assert flow_gap < 2.5 * floor and flow_gap < 0.5 * gauss_gap, (floor, flow_gap, gauss_gap)


def test_log_prob_is_a_density_in_the_codes_units():
    """Standardisation is part of the density: exp(log p) integrates to 1 over a grid."""
    torch.manual_seed(0)
    flow = FlowPrior(2, {"kind": "flow", **SMALL, "steps": 200}).fit(ring(1000, 0) * 3, seed=0)
    axis = torch.linspace(-12, 14, 261)
    grid = torch.cartesian_prod(axis, axis - 2)
    cell = float((axis[1] - axis[0]) ** 2)
    assert float(flow.log_prob(grid).exp().sum()) * cell == pytest.approx(1.0, abs=0.03)


def test_fit_uses_posterior_draws_not_means():
    """A collapsed dimension (every posterior N(0, 1)) comes out N(0, 1), not a spike at its means;
    a used dimension with tiny variances comes out as the means' spread."""
    gen = torch.Generator().manual_seed(0)
    mu = torch.stack([3 + 0.5 * torch.randn(3000, generator=gen), torch.zeros(3000)], 1)
    logvar = torch.stack([torch.full((3000,), -10.0), torch.zeros(3000)], 1)
    torch.manual_seed(0)
    flow = FlowPrior(2, {"kind": "flow", **SMALL, "steps": 300}).fit(mu, logvar, seed=0)
    z = flow.sample(4000, generator=torch.Generator().manual_seed(1))
    assert float(z[:, 1].std()) == pytest.approx(1.0, abs=0.1)
    assert float(z[:, 0].mean()) == pytest.approx(3.0, abs=0.1)
    assert float(z[:, 0].std()) == pytest.approx(0.5, abs=0.07)
    on_means = FlowPrior(2, {"kind": "flow", **SMALL, "steps": 100}).fit(mu, seed=0)  # logvar None: the points
    assert float(on_means.sample(2000)[:, 1].std()) < 0.05


def test_config_keeps_each_kind_to_its_own_options(tiny_config, make_raw):
    assert PriorConfig(kind="flow").to_dict() == {"kind": "flow", "transforms": 3, "hidden": [128, 128],
                                                  "bins": 8, "steps": None, "lr": 1e-3}
    assert PriorConfig().to_dict() == {"kind": "gmm", "components": 10, "covariance": "full"}
    with pytest.raises(ConfigError, match=r"\['components'\] apply to another kind.*'flow'"):
        build_prior({"kind": "flow", "components": 3}, 2)
    with pytest.raises(ConfigError, match=r"\['bins', 'lr'\] apply to another kind.*'gmm'"):
        build_prior({"kind": "gmm", "bins": 4, "lr": 0.1}, 2)
    for bad in ({"hidden": []}, {"lr": 0.0}, {"transforms": 0}, {"steps": 0}):
        with pytest.raises(ConfigError):
            build_prior({"kind": "flow", **bad}, 2)
    with pytest.raises(ConfigError, match="kind 'flow'"):
        FlowPrior(2, PriorConfig())
    assert isinstance(build_prior({"kind": "flow"}, 2), FlowPrior)

    raw = make_raw(48, names=("image",))
    torch.manual_seed(0)
    model = build_model(tiny_config("vae", ("image",), prior={"kind": "gmm", "components": 3}), raw).eval()
    with pytest.raises(ConfigError, match="components"):
        fit_prior(model, raw, kind="flow", components=3)
    prior = fit_prior(model, raw, kind="flow", steps=5, transforms=1, hidden=[8])  # switching kind: flow defaults
    assert isinstance(model.prior, FlowPrior) and prior.config.bins == 8
    assert model.config.prior.to_dict() == {"kind": "flow", "transforms": 1, "hidden": [8], "bins": 8, "steps": 5,
                                            "lr": 1e-3}
    again = fit_prior(model, raw, bins=4)  # same kind: the model's options stay, given ones change
    assert (again.config.transforms, again.config.hidden, again.config.steps, again.config.bins) == (1, [8], 5, 4)


def test_model_with_a_flow_prior_samples_from_it_and_round_trips(tiny_config, make_raw, tmp_path):
    raw = make_raw(64, names=("image",))
    torch.manual_seed(0)
    model = build_model(tiny_config("vae", ("image",), latent_dim=3), raw).eval()
    fit_prior(model, raw, kind="flow", steps=30, transforms=1, hidden=[16], seed=0)
    assert model.prior.is_fitted
    torch.manual_seed(5)
    z = model.prior_sample(6)
    torch.manual_seed(5)
    assert not torch.allclose(z, torch.randn(6, 3))  # the codes come through the flow, not N(0, I)

    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["config"]["prior"]
    assert saved == {"kind": "flow", "transforms": 1, "hidden": [16], "bins": 8, "steps": 30, "lr": 1e-3}
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.prior, FlowPrior) and loaded.prior.is_fitted
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for seed in (0, 7):
        torch.manual_seed(seed)
        first = model.sample(5, raw=True)["image"]
        torch.manual_seed(seed)
        assert torch.equal(first, loaded.sample(5, raw=True)["image"])


def test_fitting_with_a_seed_is_reproducible(tiny_config, make_raw):
    raw = make_raw(48, names=("image",))
    torch.manual_seed(0)
    model = build_model(tiny_config("vae", ("image",)), raw).eval()
    first = fit_prior(model, raw, kind="flow", steps=10, transforms=1, hidden=[8], seed=3, attach=False)
    torch.manual_seed(99)  # the global RNG does not matter
    second = fit_prior(model, raw, kind="flow", steps=10, transforms=1, hidden=[8], seed=3, attach=False)
    assert all(torch.equal(x, y) for x, y in zip(first.state_dict().values(), second.state_dict().values()))
    grid = torch.randn(20, 4)
    torch.testing.assert_close(first.log_prob(grid), second.log_prob(grid))
    assert not torch.allclose(first.log_prob(grid), log_normal(grid, torch.zeros(4), torch.zeros(4)))


@pytest.mark.slow
def test_a_run_config_selects_the_flow_prior(tmp_path):
    """`omnivae train` fits the prior the model config names after training, and saves it."""
    from omnivae.cli import app

    args = ["train", "--data", "shapes", "--out", str(tmp_path / "run"),
            "--set", "data.options.n=160", "--set", "data.options.image_size=16",
            "--set", "model.model=vae", "--set", "model.latent_dim=4",
            "--set", "model.modalities={image: {arch: mlp, hidden: [32]}}",
            "--set", "model.prior={kind: flow, transforms: 1, hidden: [16], steps: 20}",
            "--set", "train.max_epochs=1", "--set", "train.progress=false", "--set", "train.tensorboard=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "model")
    assert isinstance(model.prior, FlowPrior) and model.prior.is_fitted
    assert model.sample(3)["image"].shape == (3, 3, 16, 16)


def test_flows_build_on_the_meta_device_without_the_compiler_stack():
    """The loader's allocation-free size check builds the model on the meta device: the zuko flows
    (flow prior, conditional prior, JNF) are built on the CPU there instead of failing, which
    imported torch._dynamo (about a second of every load)."""
    import subprocess
    import sys

    code = ("import sys, torch\nfrom omnivae.models import build_model\n"
            "mods = {'a': {'kind': 'vector', 'dim': 5}, 'b': {'kind': 'categorical', 'num_classes': 3}}\n"
            "with torch.device('meta'):\n"
            "    for cfg in ({'model': 'mopoe', 'conditional_prior': {'kind': 'flow'}},\n"
            "                {'model': 'vae', 'prior': {'kind': 'flow'}, 'modalities': {'a': mods['a']}},\n"
            "                {'model': 'jnf'}):\n"
            "        m = build_model({'latent_dim': 4, 'modalities': mods, **cfg})\n"
            "        assert {p.device.type for p in m.parameters()} == {'meta'}, cfg\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_an_oversized_flow_is_refused_before_it_is_built():
    import pytest

    from omnivae.errors import ConfigError
    from omnivae.priors.flow import FlowPrior

    with pytest.raises(ConfigError, match="parameters"):
        FlowPrior(8, {"hidden": [200_000, 200_000]})
