"""MHVAE (Dorent et al. 2023): the hierarchical ELBO against its formula (a product of experts
with the prior at every level, written out here with torch.distributions), a missing modality
left out of every product, the subset drawn per example, encode/draw/prior_sample through the
hierarchy, and a short training that generates the label from the image. The shared contract
is in test_model_suite.py."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from omnivae import ConfigError, build_model
from omnivae.distributions import Gaussian
from omnivae.models.mhvae import subset_draw, subset_rows

from helpers.models import at_seed, batch_of, build, pick

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT, UPPER = 3, 2


def tiny(tiny_config, **options):
    options = {"upper": [UPPER], "hidden": [8], "features": 6, "latent_dim": LATENT, "rescale": "none", **options}
    return build(tiny_config, "mhvae", **options)


def poe(gaussians):
    """Product of diagonal Gaussians given as (mu, logvar) pairs."""
    precision = sum(torch.exp(-lv) for _, lv in gaussians)
    mu = sum(m * torch.exp(-lv) for m, lv in gaussians) / precision
    return mu, -torch.log(precision)


def per_example(prior, experts, present):
    """Example by example: the product of the prior and the experts of the present modalities."""
    out = [poe([(prior[0][b], prior[1][b])] + [(e[0][b], e[1][b]) for k, e in enumerate(experts) if present[k, b]])
           for b in range(len(present[0]))]
    return torch.stack([m for m, _ in out]), torch.stack([lv for _, lv in out])


def head(net, h):
    return net(h).chunk(2, -1)


@pytest.mark.parametrize("mask", [None, {"image": torch.tensor([True, False, True, True] * 4),
                                         "label": torch.tensor([True, True, False, False] * 4)}],
                         ids=["complete", "incomplete"])
def test_mhvae_objective_matches_formula_in_eval(tiny_config, make_tensors, mask):
    """In eval mode every present modality is an expert: the ELBO of the full subset."""
    model = tiny(tiny_config, beta=1.5).eval()
    batch = batch_of(model, make_tensors(16), mask)
    out = at_seed(model, batch, seed=2)
    names = model.names
    present = torch.stack([batch.present(n) for n in names])
    qs = [model.modalities[n].encode(batch.data[n]) for n in names]
    d1 = [torch.cat([q.mu, q.logvar], -1) for q in qs]
    d2 = [model.up[n][0](d1[k]) for k, n in enumerate(names)]
    torch.manual_seed(2)
    # top level: p(z_2) = N(0, I) times the experts of the present modalities, per example
    zeros = torch.zeros(16, UPPER)
    tops = [head(model.head[n], d2[k]) for k, n in enumerate(names)]
    mu2, lv2 = per_example((zeros, zeros), tops, present)
    z2 = mu2 + torch.randn(16, UPPER) * torch.exp(0.5 * lv2)
    h = model.down[0](z2)
    p_mu, p_lv = head(model.prior_net[0], h)
    posts = [head(model.post[n][0], torch.cat([h, d1[k]], -1)) for k, n in enumerate(names)]
    mu1, lv1 = per_example((p_mu, p_lv), posts, present)
    z1 = mu1 + torch.randn(16, LATENT) * torch.exp(0.5 * lv1)
    rec = sum(present[k].float() * model.modalities[n].log_likelihood(z1.unsqueeze(0), batch.data[n])[0]
              for k, n in enumerate(names))
    std = lambda m, lv: Normal(m, torch.exp(0.5 * lv))  # noqa: E731
    kl2 = kl_divergence(std(mu2, lv2), Normal(0.0, 1.0)).sum(-1)
    kl1 = kl_divergence(std(mu1, lv1), std(p_mu, p_lv)).sum(-1)
    valid = present.any(0)
    want = -(rec - 1.5 * (kl1 + kl2))[valid].mean()
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.terms["kl_z2"].item() == pytest.approx(kl2[valid].mean().item(), rel=1e-5)
    assert out.terms["kl_z1"].item() == pytest.approx(kl1[valid].mean().item(), rel=1e-5)


def test_each_example_draws_a_uniform_non_empty_subset_of_its_present_modalities():
    torch.manual_seed(0)
    present = torch.tensor([[True, True, False, True], [True, False, False, True], [True, True, False, False]])
    present = present.repeat_interleave(5000, dim=1)
    use = subset_draw(present)
    assert not (use & ~present).any()  # only present modalities
    assert (use.any(0) == present.any(0)).all()  # non-empty wherever something is present
    first = use[:, :5000].T  # three present: 7 subsets, each about 1/7
    counts = torch.unique(first.long() @ torch.tensor([1, 2, 4]), return_counts=True)[1].float() / 5000
    assert len(counts) == 7 and (counts - 1 / 7).abs().max() < 0.02


def test_subset_rows():
    rows = subset_rows(3, "unimodal", "cpu")
    assert rows.tolist() == [[True] * 3, [True, False, False], [False, True, False], [False, False, True]]
    every = subset_rows(3, "all", "cpu")
    assert every.shape == (7, 3) and len({tuple(r) for r in every.tolist()}) == 7 and every.any(1).all()


@pytest.mark.parametrize("which", ["unimodal", "all"])
def test_training_averages_the_elbos_of_its_subsets(tiny_config, make_tensors, monkeypatch, which):
    """With draws at the posterior means, the training loss is the mean over subsets and examples
    of each subset's ELBO, every present modality reconstructed from the subset's posterior; a
    subset that keeps none of an example's modalities adds nothing."""
    monkeypatch.setattr(Gaussian, "rsample", lambda self, k=None: self.mu if k is None else self.mu.expand(k, *self.mu.shape))
    model = tiny(tiny_config, beta=0.7, subsets=which).train()
    mask = {"image": torch.tensor([True, False, True, True] * 4), "label": torch.tensor([True, True, False, True] * 4)}
    batch = batch_of(model, make_tensors(16), mask)
    out = model.loss(batch)
    mu, logvar, present = model.encode_unimodal(batch)
    values, counts = 0.0, 0
    for row in subset_rows(2, which, "cpu"):
        use = row.unsqueeze(1) & present
        z, levels = model.posteriors(mu, logvar, use, sample=False)
        rec = sum(present[k].float() * model.modalities[n].log_likelihood(z.unsqueeze(0), batch.data[n])[0]
                  for k, n in enumerate(model.names))
        kl = sum(0.5 * (p.logvar - q.logvar + (q.logvar.exp() + (q.mu - p.mu) ** 2) / p.logvar.exp() - 1).sum(-1)
                 for q, p in levels)
        keep = use.any(0)
        values, counts = values + (rec - 0.7 * kl)[keep].sum(), counts + int(keep.sum())
    assert out.total.item() == pytest.approx(-(values / counts).item(), rel=1e-5)


def test_training_draws_subsets_and_eval_uses_every_present_modality(tiny_config, make_tensors):
    model = tiny(tiny_config, subsets="sample")
    batch = batch_of(model, make_tensors(16))
    train = [at_seed(model, batch, seed=s).total.item() for s in range(3)]
    model.eval()
    assert at_seed(model, batch, seed=0).total.item() != pytest.approx(train[0])
    assert at_seed(model, batch, seed=0).total.item() == at_seed(model, batch, seed=0).total.item()


def test_encode_draw_and_prior_sample_go_through_the_hierarchy(tiny_config, make_tensors):
    model = tiny(tiny_config).eval()
    x = pick(make_tensors(16), model.names, 5)
    mu, logvar, present = model.encode_unimodal(model.as_batch(x))
    z, levels = model.posteriors(mu, logvar, present, sample=False)
    torch.testing.assert_close(model.encode(x), z)  # z_1 with the upper level at its mean
    only_label = model.encode(x, given=["label"])
    use = torch.stack([torch.zeros(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool)])
    torch.testing.assert_close(only_label, model.posteriors(mu, logvar, use, sample=False)[0])
    assert not torch.allclose(only_label, z)
    torch.manual_seed(0)
    draws = model.draw(mu, logvar, present, 4000)
    assert draws.shape == (4000, 5, LATENT)
    # the draws' spread exceeds the bottom level's own: the upper level is sampled too
    assert (draws.var(0) > levels[-1][0].logvar.exp() * 1.02).any()
    assert model.prior_sample(6).shape == (6, LATENT) and model.sample(4)["image"].shape == (4, 1, 8, 8)


def test_mhvae_config_errors(tiny_config):
    with pytest.raises(ConfigError, match="upper"):
        tiny(tiny_config, upper=[])
    with pytest.raises(ConfigError, match="features"):
        tiny(tiny_config, features=0)
    with pytest.raises(ConfigError, match="at least two"):
        build_model(tiny_config("mhvae", ("label",)))


def test_short_training_generates_the_label_from_the_image(tiny_config, make_tensors):
    torch.manual_seed(0)
    model = build_model(tiny_config("mhvae", ("image", "label"), latent_dim=4, upper=[4], hidden=[32], features=32))
    data = make_tensors(96)
    batch = batch_of(model, data)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(400):
        opt.zero_grad()
        model.loss(batch).total.backward()
        opt.step()
    model.eval()
    test = make_tensors(200, seed=1)
    label = model.generate({"image": test["image"]}, targets=["label"], mean=True, raw=True)["label"]
    assert (label == test["label"]).float().mean() > 0.9


def test_runs_warm_the_kl_up_unless_the_config_sets_it(tmp_path, make_raw):
    """train_run gives MHVAE a KL warm-up of 10 epochs, at most half the run, and a learning rate
    of 2e-3 where the run config leaves them unset (run.yaml records them); a value given stays,
    also 0 or the library default, and other models keep the library defaults."""
    from omnivae.run import RunConfig, train_run, with_model_run_defaults
    from omnivae.run_folder import RunFolder

    def warmup(model: str, **train) -> float:
        config = RunConfig.from_dict({"model": {"model": model}, "train": train})
        return with_model_run_defaults(config).train.kl_warmup_epochs

    assert warmup("mhvae") == 10.0 and warmup("mhvae", max_epochs=6) == 3.0
    assert warmup("mhvae", kl_warmup_epochs=0) == 0.0 and warmup("mhvae", kl_warmup_epochs=2.5) == 2.5
    assert warmup("mopoe") == 0.0

    def lr(model: str, **train) -> float:
        return with_model_run_defaults(RunConfig.from_dict({"model": {"model": model}, "train": train})).train.lr

    assert lr("mhvae") == 2e-3 and lr("mhvae", lr=1e-3) == 1e-3 and lr("mopoe") == 1e-3
    config = {"data": {"source": "shapes", "options": {"n": 48, "level": "easy"}},
              "model": {"model": "mhvae", "latent_dim": 2, "upper": [2], "hidden": [8], "features": 8,
                        "conditional_prior": None, "modalities": {"image": {"arch": "mlp", "hidden": [16]}, "text": {}}},
              "train": {"max_epochs": 2, "batch_size": 16, "progress": False, "tensorboard": False}}
    train_run(config, tmp_path / "run")
    saved = RunFolder(tmp_path / "run").read_config()["train"]
    assert saved["kl_warmup_epochs"] == 1.0 and saved["lr"] == 2e-3
    from typer.testing import CliRunner

    from omnivae.cli import app

    out = CliRunner().invoke(app, ["models", "mhvae"])
    assert out.exit_code == 0 and "train.kl_warmup_epochs=10.0" in out.output and "train.lr=0.002" in out.output
    assert "kl_warmup" not in CliRunner().invoke(app, ["models", "mopoe"]).output
