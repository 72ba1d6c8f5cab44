"""Posterior-collapse checks: active units and the MI estimate on hand-built posteriors,
the distinct-caption measure, and the CollapseMonitor callback (plus KL warm-up) in a tiny
image + caption training run."""
from __future__ import annotations

import csv
import functools
import math
from types import SimpleNamespace

import pytest
import torch

from omnivae.metrics.collapse import (
    active_units,
    caption_sensitivity,
    distinct_ratio,
    mutual_information,
    unit_variances,
)
from omnivae.train import trainer as trainer_module
from omnivae.train.collapse import CollapseMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- active units and mutual information ------------------------------------------------------------
def test_collapsed_posterior_has_no_active_units_and_no_information():
    mu, logvar = torch.full((256, 8), 0.3), torch.full((256, 8), -0.5)  # every x: the same q(z|x)
    assert active_units(mu) == 0
    assert unit_variances(mu).abs().max() < 1e-12
    assert mutual_information(mu, logvar, generator=gen()) == pytest.approx(0.0, abs=1e-9)


def test_separated_posteriors_are_all_active_with_high_information():
    n, d = 256, 6
    mu, logvar = 10 * torch.randn(n, d, generator=gen(1)), torch.full((n, d), -4.0)
    assert active_units(mu) == d
    mi = mutual_information(mu, logvar, generator=gen())
    assert mi == pytest.approx(math.log(n), abs=0.05)  # each z identifies its x: the log N ceiling
    assert mi <= math.log(n) + 1e-9


def test_partly_collapsed_code_counts_only_the_varying_dims():
    mu = torch.zeros(300, 5)
    mu[:, 1] = torch.randn(300, generator=gen(2))
    mu[:, 3] = 0.05 * torch.randn(300, generator=gen(3))  # variance 0.0025: below the 0.01 threshold
    assert active_units(mu) == 1
    assert active_units(mu, threshold=0.001) == 2
    # the Gaussian channel z = x + noise with Var x = Var noise = 1 carries 0.5 log 2 nats per dim
    x = torch.randn(2000, 2, generator=gen(4))
    mi = mutual_information(x, torch.zeros_like(x), samples=2, generator=gen())
    assert 0.4 * 2 * 0.5 * math.log(2) < mi < 1.2 * 2 * 0.5 * math.log(2)


def test_mi_is_reproducible_and_leaves_the_global_stream_alone():
    mu, logvar = torch.randn(64, 3, generator=gen(5)), torch.zeros(64, 3)
    state = torch.get_rng_state()
    a = mutual_information(mu, logvar, generator=gen(7), chunk=10)  # chunking does not change the result
    assert torch.equal(torch.get_rng_state(), state)
    assert a == pytest.approx(mutual_information(mu, logvar, generator=gen(7)), rel=1e-12)


def test_collapse_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="mu"):
        active_units(torch.zeros(4))
    with pytest.raises(ValueError, match="logvar"):
        mutual_information(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="finite"):
        active_units(torch.tensor([[float("nan")]]))
    with pytest.raises(TypeError):
        active_units([[0.0, 1.0]])


# -- captions ---------------------------------------------------------------------------------------
class _StubTextModel:
    """decode(z) writes a caption from the sign of z's first coordinate (or ignores z)."""

    def __init__(self, uses_z: bool):
        from omnivae.modalities.text import TextModality

        text_checks = functools.partial(TextModality.output_diversity, None)  # the text kind's own check
        self.modalities = {"text": SimpleNamespace(kind="text", checks_diversity=True, output_diversity=text_checks),
                           "image": SimpleNamespace(kind="image", checks_diversity=False)}
        self.uses_z, self.device = uses_z, torch.device("cpu")

    def decode(self, z, targets, **options):
        words = ["a red circle" if (v > 0 and self.uses_z) else "A  blue square" for v in z[:, 0].tolist()]
        return {"text": words}


def test_caption_sensitivity_sees_a_decoder_that_ignores_z():
    z = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]])
    assert caption_sensitivity(_StubTextModel(True), "text", z) == 0.5
    assert caption_sensitivity(_StubTextModel(False), "text", z) == 0.25  # one caption for every z
    assert distinct_ratio(["a b", "A  b", "c"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="not captions"):
        caption_sensitivity(_StubTextModel(True), "image", z)
    with pytest.raises(ValueError, match="no modality"):
        caption_sensitivity(_StubTextModel(True), "caption", z)


# -- the callback in a run --------------------------------------------------------------------------
def tiny_text_run(tmp_path, name, free_bits=0.0, **train):
    from omnivae.run import train_run

    config = {"data": {"source": "shapes", "options": {"n": 240, "level": "easy"}, "test_fraction": 0.1},
              "model": {"model": "mopoe", "latent_dim": 6, "free_bits": free_bits, "modalities": {
                  "image": {"channels": [8, 16]}, "text": {"max_len": 8, "hidden": 32, "embed_dim": 16}}},
              "train": {"max_epochs": 2, "batch_size": 32, "progress": False, "tensorboard": False,
                        "num_threads": 1, "log_every_n_steps": 1, "val_fraction": 0.2, **train}}
    return train_run(config, tmp_path / name, overwrite=True)


@pytest.fixture
def with_monitor(monkeypatch):
    """make_trainer plus a CollapseMonitor (unless make_trainer already adds one)."""
    original = trainer_module.make_trainer

    def make(config, run_dir, has_val):
        trainer = original(config, run_dir, has_val)
        if not any(isinstance(cb, CollapseMonitor) for cb in trainer.callbacks):
            trainer.callbacks.append(CollapseMonitor(every_n_epochs=1, n=40))
        return trainer

    monkeypatch.setattr(trainer_module, "make_trainer", make)


def read_metrics(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_monitor_logs_collapse_keys_and_kl_warmup_runs_with_text(tmp_path, with_monitor):
    run = tiny_text_run(tmp_path, "run", free_bits=0.1, kl_warmup_epochs=1.0)  # warm-up and free bits together
    assert run.model.config.free_bits == 0.1
    rows = read_metrics(run.run_dir)
    logged = [r for r in rows if r.get("collapse/active_units")]
    assert len(logged) == 2  # once per validation epoch
    for r in logged:
        assert 0 <= float(r["collapse/active_units"]) <= 6
        assert float(r["collapse/active_units/text"]) >= 0 and float(r["collapse/active_units/image"]) >= 0
        assert -1.0 < float(r["collapse/mi"]) <= math.log(40) + 1e-6
        assert 0 < float(r["collapse/distinct_captions"]) <= 1
    betas = [float(r["beta_scale"]) for r in rows if r.get("beta_scale")]
    assert betas[0] == 0.0 and betas[-1] == 1.0 and betas == sorted(betas)  # warm-up: 0 -> 1 over epoch 1
    assert 0 < max(betas[:len(betas) // 2]) < 1


def test_monitor_does_not_change_training(tmp_path, monkeypatch):
    torch.manual_seed(0)  # the model is initialised before fit seeds everything
    plain = tiny_text_run(tmp_path, "plain", max_epochs=2)
    original = trainer_module.make_trainer

    def make(config, run_dir, has_val):
        trainer = original(config, run_dir, has_val)
        trainer.callbacks.append(CollapseMonitor(n=40))
        return trainer

    monkeypatch.setattr(trainer_module, "make_trainer", make)
    torch.manual_seed(0)
    watched = tiny_text_run(tmp_path, "watched", max_epochs=2)
    assert any(r.get("collapse/mi") for r in read_metrics(watched.run_dir))
    for (k, a), b in zip(plain.model.state_dict().items(), watched.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_monitor_checks_its_options():
    with pytest.raises(ValueError):
        CollapseMonitor(every_n_epochs=0)
    with pytest.raises(ValueError):
        CollapseMonitor(n=1)
