"""The training step's cost design: loss terms summed on the device and handed to
Lightning's logger only on logging steps, epoch means that equal the mean of the steps
(also across a mid-epoch resume), one fused gradient check, fused Adam, optional
torch.compile and bf16 autocast."""
from __future__ import annotations

import csv

import lightning as L
import pytest
import torch

from omnivae import build_model
from omnivae.data.tensors import TensorData
from omnivae.train import module as module_file
from omnivae.train.checkpoint import read_checkpoint
from omnivae.train.config import TrainConfig
from omnivae.train.module import OmniModule, all_finite
from omnivae.train.trainer import fit, last_checkpoint

from helpers import training
from helpers.training import Crash

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"max_epochs": 2, "batch_size": 16, "progress": False, "tensorboard": False, "patience": None,
         "num_threads": 1, "lr": 3e-3}


class StepLosses(L.Callback):
    """Records each step's returned loss and batch size, per epoch."""

    def __init__(self):
        self.seen: dict[int, list[tuple[float, int]]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).append((float(outputs["loss"]), len(batch)))


@pytest.fixture
def tiny(make_raw, tiny_config):
    raw = make_raw(40)  # 16 + 16 + 8: the last batch is smaller, so weighting matters
    model = build_model(tiny_config("mvae"), raw)
    return model, TensorData.from_raw(model, raw)


def fit_with(monkeypatch, model, data, run_dir, callbacks=(), **train):
    return training.fit_with(monkeypatch, model, data, run_dir, {**TRAIN, **train}, callbacks)


def csv_rows(run_dir):
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_epoch_mean_is_the_batch_weighted_mean_of_the_steps(monkeypatch, tiny, tmp_path):
    model, data = tiny
    steps = StepLosses()
    fit_with(monkeypatch, model, data, tmp_path, [steps], log_every_n_steps=50)
    logged = {int(r["epoch"]): float(r["train/loss_epoch"]) for r in csv_rows(tmp_path) if r.get("train/loss_epoch")}
    assert sorted(logged) == [0, 1]
    for epoch, seen in steps.seen.items():
        assert [b for _, b in seen] == [16, 16, 8]
        expected = sum(v * b for v, b in seen) / sum(b for _, b in seen)
        unweighted = sum(v for v, _ in seen) / len(seen)
        assert logged[epoch] == pytest.approx(expected, rel=1e-5)
        assert abs(expected - unweighted) > 1e-6  # the check tells the two apart


def test_loggers_are_called_only_on_logging_steps(monkeypatch, tiny, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    model, data = tiny
    calls, epoch_logs = [], []
    real_log_metrics, real_log_dict = CSVLogger.log_metrics, OmniModule.log_dict

    def counting(self, metrics, step=None):
        calls.append((step, sorted(metrics)))
        return real_log_metrics(self, metrics, step)

    def epoch_logged(self, metrics, *args, **kwargs):
        epoch_logs.append(sorted(metrics))
        return real_log_dict(self, metrics, *args, **kwargs)

    monkeypatch.setattr(CSVLogger, "log_metrics", counting)
    monkeypatch.setattr(OmniModule, "log_dict", epoch_logged)
    fit_with(monkeypatch, model, data, tmp_path, max_epochs=4, log_every_n_steps=4)  # 12 steps
    step_calls = [s for s, keys in calls if any(k.endswith("_step") for k in keys)]
    assert step_calls == [3, 7, 11]  # Lightning's rule: log when (step + 1) % 4 == 0
    assert len(epoch_logs) == 4 and all(k.endswith("_epoch") for keys in epoch_logs for k in keys)
    rows = [r for r in csv_rows(tmp_path) if r.get("train/loss_step")]
    assert [int(r["step"]) for r in rows] == [3, 7, 11]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(r["beta_scale"] == "1.0" for r in rows)


class LogsAProbe(L.Callback):
    """Logs a value with Lightning's own self.log on every batch (its step rows are the reference)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("probe", float(batch_idx), on_step=True, on_epoch=False)


@pytest.mark.parametrize("train", [{}, {"adversarial_weight": 0.1, "adversarial_channels": [8]}],
                         ids=["automatic", "manual-optimisation"])
def test_step_rows_land_where_self_log_puts_its_rows(monkeypatch, tiny, tmp_path, train):
    """The step rows go to the loggers through the public Logger API (not Lightning's logger
    connector); their step and epoch columns are the ones Lightning writes for self.log, also
    for a module that steps its optimiser inside training_step."""
    model, data = tiny
    fit_with(monkeypatch, model, data, tmp_path, [LogsAProbe()], max_epochs=3, log_every_n_steps=2, **train)
    rows = csv_rows(tmp_path)
    ours = [(r["step"], r["epoch"]) for r in rows if r.get("train/loss_step")]
    theirs = [(r["step"], r["epoch"]) for r in rows if r.get("probe")]
    assert ours == theirs == [("1", "0"), ("3", "1"), ("5", "1"), ("7", "2")]


def test_logged_values_hold_no_autograd_graph(tiny):
    model, data = tiny
    module = OmniModule(model, TrainConfig(**TRAIN))
    module._accumulate(model.loss(data.batch(range(16))).terms, 16)
    out = model.loss(data.batch(range(16)))
    out.terms["leaky"] = out.total  # even a term that still carries a graph is detached
    module._accumulate(out.terms, 16)
    assert all(not v.requires_grad and v.grad_fn is None for v in module._epoch_sums.values())


def crash_then_resume(monkeypatch, raw, tiny_config, run_dir, **train):
    torch.manual_seed(0)
    model = build_model(tiny_config("mvae"), raw)
    data = TensorData.from_raw(model, raw)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_with(monkeypatch, model, data, run_dir, [Crash(2)], checkpoint_every_n_steps=1, **train)
    saved = read_checkpoint(last_checkpoint(run_dir))
    monkeypatch.undo()
    fit(model, data, None, TrainConfig(**{**TRAIN, "checkpoint_every_n_steps": 1, **train}), run_dir, resume=True)
    return saved


def test_mid_epoch_checkpoint_carries_the_epoch_sums(monkeypatch, make_raw, tiny_config, tmp_path):
    saved = crash_then_resume(monkeypatch, make_raw(40), tiny_config, tmp_path, max_epochs=1)["omnivae"]
    assert saved["epoch_count"] == 32  # two batches of 16 before the crash
    assert set(saved["epoch_sums"]) >= {"loss", "rec", "kl"}
    module = OmniModule(build_model(tiny_config("mvae"), make_raw(40)), TrainConfig(**TRAIN))
    module.on_load_checkpoint({"omnivae": saved})
    assert module._epoch_count == 32
    assert torch.equal(module._epoch_sums["loss"], saved["epoch_sums"]["loss"])


def test_resumed_epoch_reports_the_uninterrupted_epoch_mean(monkeypatch, make_raw, tiny_config, tmp_path):
    raw = make_raw(40)
    torch.manual_seed(0)
    model = build_model(tiny_config("mvae"), raw)
    fit_with(monkeypatch, model, TensorData.from_raw(model, raw), tmp_path / "a", max_epochs=1,
             checkpoint_every_n_steps=1)
    whole = [float(r["train/loss_epoch"]) for r in csv_rows(tmp_path / "a") if r.get("train/loss_epoch")]
    crash_then_resume(monkeypatch, raw, tiny_config, tmp_path / "b", max_epochs=1)
    resumed = [float(r["train/loss_epoch"]) for r in csv_rows(tmp_path / "b") if r.get("train/loss_epoch")]
    assert len(whole) == len(resumed) == 1
    assert resumed[0] == pytest.approx(whole[0], rel=1e-6)


def test_all_finite_finds_nan_and_inf_in_any_tensor():
    good = [torch.randn(3, 4), torch.randn(5)]
    assert all_finite(good)
    assert not all_finite([*good, torch.tensor([1.0, float("nan")])])
    assert not all_finite([torch.tensor([float("-inf")]), *good])
    assert all_finite([torch.full((3,), 3e38)])  # large but finite is not a fault
    assert not all_finite([torch.tensor([float("nan")], dtype=torch.float64)])


def test_all_finite_falls_back_when_the_fused_kernel_is_missing(monkeypatch):
    def missing(*args):
        raise NotImplementedError("no kernel for this device")

    monkeypatch.setattr(module_file.torch, "_amp_foreach_non_finite_check_and_unscale_", missing)
    assert all_finite([torch.ones(2)])
    assert not all_finite([torch.tensor([float("inf")])])


def test_adam_is_fused_unless_turned_off(tiny):
    model, _ = tiny
    assert OmniModule(model, TrainConfig(**TRAIN)).configure_optimizers().defaults["fused"] is True
    plain = OmniModule(model, TrainConfig(**TRAIN, fused_optimizer=False)).configure_optimizers()
    assert not plain.defaults.get("fused")


def test_fused_and_default_adam_train_to_the_same_weights(monkeypatch, make_raw, tiny_config, tmp_path):
    raw = make_raw(40)
    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny_config("mvae"), raw)
        fit_with(monkeypatch, model, TensorData.from_raw(model, raw), tmp_path / str(fused), fused_optimizer=fused)
        weights.append(model.state_dict())
    diff = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
    assert diff < 1e-4


@pytest.mark.parametrize("family", ["mvae", "mmvae", "mopoe", "jmvae", "mvtcae", "mmvae_plus"])
def test_bf16_autocast_trains_to_a_finite_loss(monkeypatch, make_raw, tiny_config, family, tmp_path):
    raw = make_raw(40, names=("image", "label", "vector"))
    model = build_model(tiny_config(family, names=("image", "label", "vector")), raw)
    data = TensorData.from_raw(model, raw)
    steps = StepLosses()
    fit_with(monkeypatch, model, data, tmp_path, [steps], precision="bf16-mixed", grad_clip=10.0)
    losses = [v for seen in steps.seen.values() for v, _ in seen]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


@pytest.mark.slow
def test_compiled_objective_trains_like_the_eager_one(monkeypatch, make_raw, tiny_config, tmp_path):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # the eager random draws
    raw = make_raw(40)
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_config("vae", names=("image",)), raw)
        steps = StepLosses()
        fit_with(monkeypatch, model, TensorData.from_raw(model, raw), tmp_path / str(compiled), [steps],
                 compile=compiled, max_epochs=2)
        losses.append([v for seen in steps.seen.values() for v, _ in seen])
    assert len(losses[1]) == 6  # the smaller last batch of each epoch runs through a second trace
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
