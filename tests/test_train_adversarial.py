"""Adversarial sharpening wired into training (train.adversarial_weight > 0): both networks
learn, steps count batches (KL warm-up, max_steps), clipping per optimiser, exact mid-epoch
resume of the VAE and the discriminator, the non-finite guard, config errors, and a
discriminator that learns to tell the batch's real images from the model's fakes."""
from __future__ import annotations

import csv

import lightning as L
import pytest
import torch

import omnivae.train.adversarial as adversarial_file
from omnivae import ConfigError, LossOutput, TrainingError, build_model
from omnivae.adversarial import adversarial_images, discriminator_hinge
from omnivae.data.tensors import TensorData
from omnivae.train.adversarial import AdversarialModule
from omnivae.train.checkpoint import read_checkpoint
from omnivae.train.config import TrainConfig
from omnivae.train.module import OmniModule
from omnivae.train.trainer import last_checkpoint

from helpers import training
from helpers.training import Crash

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

TRAIN = {"max_epochs": 2, "batch_size": 16, "progress": False, "tensorboard": False, "patience": None,
         "num_threads": 1, "lr": 3e-3, "log_every_n_steps": 1,
         "adversarial_weight": 0.5, "adversarial_lr": 2e-3, "adversarial_channels": [8, 16]}


def clone(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


class Snapshot(L.Callback):
    """The discriminator's weights when training starts (it is built inside fit)."""

    def on_train_start(self, trainer, pl_module):
        self.disc = clone(pl_module.discriminator.state_dict()) if hasattr(pl_module, "discriminator") else None


def build(make_raw, tiny_config, family="mopoe", n=40, names=("image", "label"), **options):
    raw = make_raw(n, names=names)  # 40 examples: batches of 16, 16 and 8
    torch.manual_seed(0)
    model = build_model(tiny_config(family, names, **options), raw)
    return model, TensorData.from_raw(model, raw)


def fit_with(monkeypatch, model, data, run_dir, callbacks=(), resume=False, **train):
    return training.fit_with(monkeypatch, model, data, run_dir, {**TRAIN, **train}, callbacks, resume)


def changed(before: dict, after: dict, prefix: str = "") -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def csv_rows(run_dir):
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- end to end ----------------------------------------------------------------------------------
def test_both_networks_learn_and_steps_count_batches(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    vae_before, snap, clipped = clone(model.state_dict()), Snapshot(), []
    real_clip = AdversarialModule.clip_gradients
    monkeypatch.setattr(AdversarialModule, "clip_gradients", lambda self, opt, **kw: (
        clipped.append((id(opt), kw["gradient_clip_val"])), real_clip(self, opt, **kw))[1])
    result = fit_with(monkeypatch, model, data, tmp_path, [snap])
    module, trainer = result.module, result.trainer
    assert type(module) is AdversarialModule and module.image == "image"
    assert trainer.global_step == 6  # one per batch: the discriminator's steps are not counted
    assert changed(snap.disc, module.discriminator.state_dict())
    assert changed(vae_before, model.state_dict(), "modalities.image.decoder")
    assert changed(vae_before, model.state_dict(), "modalities.label")
    vae_opt, disc_opt = trainer.optimizers
    assert disc_opt.defaults["betas"] == (0.5, 0.9) and disc_opt.defaults["lr"] == 2e-3
    assert all(int(s["step"]) == 6 for s in disc_opt.state.values())  # every batch updated D
    # the Trainer does not clip under manual optimisation; the module clips each optimiser itself
    assert trainer.gradient_clip_val is None and module.cfg.grad_clip == 10.0
    assert clipped == [(id(vae_opt if i % 2 else disc_opt), 10.0) for i in range(12)]
    epochs = [r for r in csv_rows(tmp_path) if r.get("train/d_loss_epoch")]
    assert len(epochs) == 2 and all(r.get("train/g_adv_epoch") and r.get("train/loss_epoch") for r in epochs)
    steps = [int(r["step"]) for r in csv_rows(tmp_path) if r.get("train/d_loss_step")]
    assert steps == list(range(6))  # log_every_n_steps 1: every step, once
    ckpt = read_checkpoint(last_checkpoint(tmp_path))
    assert len(ckpt["optimizer_states"]) == 2
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    # the model's weights come out of the checkpoint without the discriminator's (run.py's path)
    from omnivae.run import load_weights_from_checkpoint

    load_weights_from_checkpoint(model, last_checkpoint(tmp_path))


def test_generator_term_trains_the_image_path_only(monkeypatch, make_raw, tiny_config, tmp_path):
    """One step with and one without the generator term (same noise, same discriminator): only
    the parameters upstream of the fakes get another update; no gradient is left behind."""
    leftovers = []

    class Grads(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            leftovers.extend(n for n, p in pl_module.named_parameters() if p.grad is not None)
    states = []
    for term in (True, False):
        if not term:
            monkeypatch.setattr(adversarial_file, "generator_hinge", lambda logits: logits.sum() * 0.0)
        # rescale none: with a weighted label, gradient clipping (over every parameter) would
        # couple the label decoder's update to the image path's gradients
        model, data = build(make_raw, tiny_config, rescale="none")
        fit_with(monkeypatch, model, data, tmp_path / str(term), [Grads()], max_steps=1)
        states.append(clone(model.state_dict()))
    assert leftovers == []  # each update's gradients are cleared; D's get none from the generator term
    with_term, without = states
    assert changed(with_term, without, "modalities.image.decoder")
    assert changed(with_term, without, "modalities.image.encoder")  # fakes are decoded from posterior draws
    assert not changed(with_term, without, "modalities.label.decoder")


@pytest.mark.parametrize("family, options", [("mvae", {}), ("mmvae", {}), ("mmvae_plus", {"private_dim": 2}),
                                             ("cvae", {"target": "image", "conditions": ["label"]})])
def test_model_families_train_adversarially(monkeypatch, make_raw, tiny_config, tmp_path, family, options):
    model, data = build(make_raw, tiny_config, family, **options)
    before, snap = clone(model.state_dict()), Snapshot()
    result = fit_with(monkeypatch, model, data, tmp_path, [snap], max_epochs=1)
    assert changed(snap.disc, result.module.discriminator.state_dict())
    assert changed(before, model.state_dict(), "modalities.image.decoder")
    rows = [r for r in csv_rows(tmp_path) if r.get("train/loss_epoch")]
    assert all(torch.isfinite(torch.tensor(float(r[k]))) for r in rows for k in ("train/loss_epoch",
                                                                                   "train/d_loss_epoch"))


def test_bf16_autocast_trains_adversarially(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    result = fit_with(monkeypatch, model, data, tmp_path, max_epochs=1, precision="bf16-mixed")
    assert not result.trainer.optimizers[1].defaults.get("fused")  # as the model's: clipping needs unfused
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in result.module.parameters())


def test_weight_zero_trains_the_plain_module(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    result = fit_with(monkeypatch, model, data, tmp_path, max_epochs=1, adversarial_weight=0.0)
    assert type(result.module) is OmniModule and result.module.automatic_optimization
    assert result.trainer.gradient_clip_val == 10.0
    assert not any(k.startswith("discriminator.") for k in read_checkpoint(last_checkpoint(tmp_path))["state_dict"])


def test_kl_and_adversarial_warmups_follow_the_batches(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    betas, scales = [], []
    original = model.loss

    def record(batch, beta_scale=1.0):
        if torch.is_grad_enabled():
            betas.append(beta_scale)
        return original(batch, beta_scale)
    model.loss = record

    class Scales(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            scales.append(pl_module.adversarial_scale())
    fit_with(monkeypatch, model, data, tmp_path, [Scales()], kl_warmup_epochs=1, adversarial_warmup_epochs=2 / 3,
             max_epochs=2)
    assert betas == pytest.approx([0, 1 / 3, 2 / 3, 1, 1, 1])  # 3 steps per epoch, not 6
    assert scales == pytest.approx([0, 0.5, 1, 1, 1, 1])


def test_max_steps_counts_batches(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    batches = []

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            batches.append((trainer.current_epoch, batch_idx))
    result = fit_with(monkeypatch, model, data, tmp_path, [Count()], max_steps=4, max_epochs=5)
    assert result.trainer.global_step == 4 and batches == [(0, 0), (0, 1), (0, 2), (1, 0)]


# -- resume ----------------------------------------------------------------------------------------
def test_mid_epoch_resume_repeats_the_uninterrupted_run(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    fit_with(monkeypatch, model, data, tmp_path / "ref", checkpoint_every_n_steps=1)
    reference = read_checkpoint(last_checkpoint(tmp_path / "ref"))
    model, data = build(make_raw, tiny_config)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_with(monkeypatch, model, data, tmp_path / "b", [Crash(2)], checkpoint_every_n_steps=1)
    saved = read_checkpoint(last_checkpoint(tmp_path / "b"))
    assert saved["global_step"] == 2 and saved["omnivae"]["epoch_count"] == 32
    assert {"d_loss", "g_adv", "loss"} <= set(saved["omnivae"]["epoch_sums"])
    model, data = build(make_raw, tiny_config)  # the crashed process is gone: start from scratch
    fit_with(monkeypatch, model, data, tmp_path / "b", checkpoint_every_n_steps=1, resume=True)
    resumed = read_checkpoint(last_checkpoint(tmp_path / "b"))
    assert resumed["global_step"] == reference["global_step"] == 6
    ref, res = reference["state_dict"], resumed["state_dict"]
    assert ref.keys() == res.keys() and any(k.startswith("discriminator.") for k in ref)
    assert all(torch.allclose(ref[k], res[k], rtol=0, atol=1e-6) for k in ref), \
        [k for k in ref if not torch.allclose(ref[k], res[k], rtol=0, atol=1e-6)]
    for ref_opt, res_opt in zip(reference["optimizer_states"], resumed["optimizer_states"]):
        for i, state in ref_opt["state"].items():
            assert all(torch.allclose(v, res_opt["state"][i][k], rtol=0, atol=1e-6) for k, v in state.items())

    def epoch_means(run_dir):
        rows = []
        for path in sorted((run_dir / "logs").glob("metrics*.csv")):
            with open(path, newline="") as f:
                rows += list(csv.DictReader(f))
        return {int(r["epoch"]): float(r["train/d_loss_epoch"]) for r in rows if r.get("train/d_loss_epoch")}
    assert epoch_means(tmp_path / "b") == pytest.approx(epoch_means(tmp_path / "ref"), rel=1e-6)


def test_resuming_a_plain_checkpoint_adversarially_is_a_config_error(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    fit_with(monkeypatch, model, data, tmp_path, max_epochs=1, adversarial_weight=0.0)
    with pytest.raises(ConfigError, match="without an adversarial term"):
        fit_with(monkeypatch, model, data, tmp_path, max_epochs=2, resume=True)


def test_resuming_an_adversarial_checkpoint_plainly_is_a_config_error(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    fit_with(monkeypatch, model, data, tmp_path, max_epochs=1)
    with pytest.raises(ConfigError, match="trained with an adversarial term"):
        fit_with(monkeypatch, model, data, tmp_path, max_epochs=2, resume=True, adversarial_weight=0.0)


# -- non-finite numbers ------------------------------------------------------------------------
def nan_loss_at(model, calls):
    """Make the model's training loss NaN on the given training calls (0-based)."""
    original, count = model.loss, {"n": 0}

    def wrapped(batch, beta_scale=1.0):
        out = original(batch, beta_scale)
        if torch.is_grad_enabled():
            count["n"] += 1
            if count["n"] - 1 in calls:
                nan = out.total * float("nan")
                return LossOutput(nan, {**out.terms, "loss": nan.detach()})
        return out
    model.loss = wrapped


def test_nan_loss_stops_training_naming_the_step(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    nan_loss_at(model, {2})
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 \(epoch 0, batch 2\).*'loss'"):
        fit_with(monkeypatch, model, data, tmp_path, checkpoint_every_n_steps=1)
    assert read_checkpoint(last_checkpoint(tmp_path))["global_step"] == 2  # the last good state is kept


def test_nan_loss_can_be_skipped(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config)
    nan_loss_at(model, {1, 4})
    result = fit_with(monkeypatch, model, data, tmp_path, on_nonfinite="skip")
    assert result.module.skipped == 2 and result.trainer.global_step == 6  # skipped batches still count
    assert all(torch.isfinite(p).all() for p in result.module.parameters())
    epochs = [r for r in csv_rows(tmp_path) if r.get("train/loss_epoch")]
    assert len(epochs) == 2 and all(torch.isfinite(torch.tensor(float(r["train/loss_epoch"]))) for r in epochs)


def test_nan_discriminator_loss_stops_or_is_skipped(monkeypatch, make_raw, tiny_config, tmp_path):
    calls = {"n": 0}

    def hinge(real, fake):
        calls["n"] += 1
        loss = discriminator_hinge(real, fake)
        return loss * float("nan") if calls["n"] == 2 else loss
    monkeypatch.setattr(adversarial_file, "discriminator_hinge", hinge)
    model, data = build(make_raw, tiny_config)
    with pytest.raises(TrainingError, match=r"non-finite discriminator loss at step 1 \(epoch 0, batch 1\)"):
        fit_with(monkeypatch, model, data, tmp_path / "stop")
    calls["n"] = 0
    model, data = build(make_raw, tiny_config)
    result = fit_with(monkeypatch, model, data, tmp_path / "skip", on_nonfinite="skip")
    assert result.module.skipped == 1 and result.trainer.global_step == 6
    assert all(int(s["step"]) == 5 for s in result.trainer.optimizers[1].state.values())  # one D update dropped
    assert all(torch.isfinite(p).all() for p in result.module.discriminator.parameters())


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"adversarial_weight": -0.1}, {"adversarial_weight": float("nan")},
                                 {"adversarial_weight": float("inf")}, {"adversarial_lr": 0},
                                 {"adversarial_channels": []}, {"adversarial_channels": [8, 0]},
                                 {"adversarial_warmup_epochs": -1}, {"adversarial_modality": " "}])
def test_bad_adversarial_options_are_config_errors(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=key):
        TrainConfig.from_dict({**TRAIN, **bad})


@pytest.mark.parametrize("names, train, message", [
    (("image", "label"), {"adversarial_modality": "sound"}, r"'sound' is not a modality.*\['image', 'label'\]"),
    (("image", "label"), {"adversarial_modality": "label"}, "'label' is 'categorical'"),
    (("label", "vector"), {}, "needs? an image modality|has none"),
    (("image", "label"), {"adversarial_channels": [8, 8, 8, 8]}, "at least 16 pixels"),
])
def test_models_that_cannot_take_the_term_are_config_errors(monkeypatch, make_raw, tiny_config, tmp_path,
                                                            names, train, message):
    model, data = build(make_raw, tiny_config, "mvae", names=names)
    with pytest.raises(ConfigError, match=message):
        fit_with(monkeypatch, model, data, tmp_path / "run", **train)
    assert not (tmp_path / "run").exists()  # refused before the run folder is touched


def test_stacked_ae_is_refused(monkeypatch, make_raw, tiny_config, tmp_path):
    model, data = build(make_raw, tiny_config, "stacked_ae", names=("image",), layers=[8, 4])
    with pytest.raises(ConfigError, match="stacked_ae"):
        fit_with(monkeypatch, model, data, tmp_path)


def test_the_model_says_which_images_the_term_may_sharpen(tiny_config):
    """adversarial_modality asks model.adversarial_problem: a refused image is a ConfigError
    naming the model's reason, and without adversarial_modality the first allowed image is used."""
    cfg = tiny_config("mvae", ("image", "label"))
    cfg["modalities"]["photo"] = dict(cfg["modalities"]["image"])
    model = build_model(cfg)
    model.adversarial_problem = lambda name: "its decoder is frozen" if name == "image" else None
    config = TrainConfig.from_dict({**TRAIN, "adversarial_channels": [8]})
    assert adversarial_file.adversarial_modality(model, config) == "photo"
    with pytest.raises(ConfigError, match="cannot sharpen 'image': its decoder is frozen"):
        adversarial_file.adversarial_modality(model, config.model_copy(update={"adversarial_modality": "image"}))


def test_run_config_round_trip_keeps_the_options():
    from omnivae.run import RunConfig

    cfg = RunConfig.from_dict({"train": {"adversarial_weight": 0.1, "adversarial_modality": "image"}})
    again = RunConfig.from_dict(cfg.to_dict())
    assert again.train.adversarial_weight == 0.1 and again.train.adversarial_modality == "image"
    assert again.train.adversarial_channels == [32, 64]


# -- quality -----------------------------------------------------------------------------------------
def test_discriminator_learns_to_tell_real_from_fake(monkeypatch, make_raw, tiny_config, tmp_path):
    """After 15 steps the discriminator scores the same real images and the final model's
    fakes (fixed noise) clearly better than it did at the start."""
    model, data = build(make_raw, tiny_config)
    snap = Snapshot()
    result = fit_with(monkeypatch, model, data, tmp_path, [snap], max_epochs=5, adversarial_weight=0.1)
    disc = result.module.discriminator
    final = clone(disc.state_dict())
    model.eval(), disc.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        fake, real = adversarial_images(model, data.batch(range(40)), "image")
        after = float(discriminator_hinge(disc(real), disc(fake)))
        disc.load_state_dict(snap.disc)
        before = float(discriminator_hinge(disc(real), disc(fake)))
    disc.load_state_dict(final)
    assert before > 1.5  # an untrained discriminator: logits near 0, loss near 2
    assert after < 0.8 * before, (before, after)
