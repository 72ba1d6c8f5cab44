"""Numerical faults: a non-finite loss or gradient stops the run with a TrainingError naming
the step and the loss term or parameter (checkpoints untouched), or, with on_nonfinite:
skip, drops exactly that update; clamped log-variances keep extreme inputs finite."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from omnivae.batch import LossOutput
from omnivae.data.tensors import TensorData
from omnivae.distributions import LOGVAR_MAX, LOGVAR_MIN
from omnivae.errors import InputError, TrainingError
from omnivae.models import build_model
from omnivae.train.config import TrainConfig
from omnivae.train.trainer import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BAD_STEP = 9  # global step of the poisoned update (epoch 1 of 6 steps per epoch)
PARAM = "modalities.label.encoder.0.weight"


class Recorder(Callback):
    """Weights, optimiser state and checkpoint bytes at the start of every training batch."""

    def __init__(self):
        self.weights, self.optim, self.files = {}, {}, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = trainer.global_step
        self.weights[step] = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        self.optim[step] = copy.deepcopy(trainer.optimizers[0].state_dict()["state"])
        self.folder = Path(trainer.default_root_dir) / "checkpoints"
        self.files[step] = {p.name: p.read_bytes() for p in self.folder.glob("*.ckpt")}


def poison(module_holder: dict, kind: str, value: float):
    """Make the update at global step BAD_STEP non-finite: in the loss term 'rec', or in the
    gradient of PARAM (loss finite)."""
    def install(model):
        original = model.loss

        def loss(batch, beta_scale=1.0):
            out = original(batch, beta_scale)
            module = module_holder.get("module")
            hit = model.training and module is not None and module.global_step == BAD_STEP
            if hit and kind == "loss":
                rec = out.terms["rec"] * value
                return LossOutput(out.total + rec, {**out.terms, "rec": rec, "loss": out.total + rec})
            return out
        model.loss = loss
        if kind == "grad":
            param = dict(model.named_parameters())[PARAM]

            def hook(grad):
                module = module_holder.get("module")
                if module is not None and module.global_step == BAD_STEP:
                    return grad * value
                return grad
            param.register_hook(hook)
    return install


@pytest.fixture
def train_with(make_raw, tiny_config, tmp_path, monkeypatch):
    raw = make_raw(n=60, seed=1, names=("image", "label", "vector"))
    train_raw, val_raw = raw.split((0.8, 0.2), seed=0)

    def run(kind: str, value: float, on_nonfinite: str, max_epochs: int = 3, **options):
        torch.manual_seed(0)
        model = build_model(tiny_config("mvae", names=("image", "label", "vector")), train_raw)
        holder: dict = {}
        poison(holder, kind, value)(model)
        recorder = Recorder()
        import omnivae.train.trainer as trainer_module
        original_make, original_module = trainer_module.make_trainer, trainer_module.OmniModule

        def make_trainer(*args, **kwargs):
            trainer = original_make(*args, **kwargs)
            trainer.callbacks.append(recorder)
            return trainer

        def make_module(*args, **kwargs):
            holder["module"] = original_module(*args, **kwargs)
            return holder["module"]
        monkeypatch.setattr(trainer_module, "make_trainer", make_trainer)
        monkeypatch.setattr(trainer_module, "OmniModule", make_module)
        config = TrainConfig(max_epochs=max_epochs, batch_size=8, lr=3e-3, progress=False, tensorboard=False,
                             patience=None, num_threads=1, on_nonfinite=on_nonfinite, **options)
        error = None
        try:
            result = fit(model, TensorData.from_raw(model, train_raw), TensorData.from_raw(model, val_raw),
                         config, tmp_path / f"{kind}-{on_nonfinite}-{value}")
        except TrainingError as exc:
            error, result = exc, None
        return error, result, recorder, holder["module"]
    return run


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_optim(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(same(a[i], b[i]) for i in a)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_loss_stops_naming_step_and_term_and_keeps_checkpoints(train_with, value):
    error, _, rec, _ = train_with("loss", value, "stop", checkpoint_every_n_steps=4)
    assert error is not None, "a non-finite loss must stop the run"
    assert f"step {BAD_STEP}" in str(error) and "'rec'" in str(error)
    before = rec.files[BAD_STEP]
    assert "last.ckpt" in before  # written at step 8 and at the end of epoch 0
    after = {p.name: p.read_bytes() for p in rec.folder.glob("*.ckpt")}
    assert after == before, "the failure must not touch any checkpoint"


def test_nonfinite_gradient_stops_naming_step_and_parameter_and_keeps_checkpoints(train_with):
    error, _, rec, _ = train_with("grad", float("nan"), "stop", checkpoint_every_n_steps=4)
    assert error is not None, "a NaN gradient with a finite loss must stop the run"
    assert f"step {BAD_STEP}" in str(error) and PARAM in str(error) and "gradient" in str(error)
    after = {p.name: p.read_bytes() for p in rec.folder.glob("*.ckpt")}
    assert after == rec.files[BAD_STEP]


@pytest.mark.parametrize("kind, value", [("loss", float("nan")), ("loss", float("inf")),
                                         ("grad", float("nan")), ("grad", float("inf"))])
def test_skip_drops_exactly_the_bad_update(train_with, kind, value):
    error, result, rec, module = train_with(kind, value, "skip")
    assert error is None and result is not None, "with on_nonfinite: skip the run goes on"
    assert module.skipped == 1
    # the poisoned step changed nothing: weights and Adam's state are as before it ...
    assert same(rec.weights[BAD_STEP], rec.weights[BAD_STEP + 1])
    assert same_optim(rec.optim[BAD_STEP], rec.optim[BAD_STEP + 1])
    # ... while every other step did update the weights, and they stayed finite
    assert not same(rec.weights[BAD_STEP - 1], rec.weights[BAD_STEP])
    assert not same(rec.weights[BAD_STEP + 1], rec.weights[BAD_STEP + 2])
    final = result.module.model.state_dict()
    assert all(torch.isfinite(v).all() for v in final.values())


def test_without_the_guard_a_nan_gradient_would_poison_the_weights(train_with, monkeypatch):
    """The gradient check is what keeps the weights finite: switched off, they turn NaN."""
    from omnivae.train.module import OmniModule

    monkeypatch.setattr(OmniModule, "_bad_gradient", lambda self: None)
    _, result, _, _ = train_with("grad", float("nan"), "skip", max_epochs=2, grad_clip=None)
    assert not torch.isfinite(dict(result.module.model.named_parameters())[PARAM]).all()


# -- clamped log-variances ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def vector_model():
    import numpy as np

    from omnivae.data.raw import RawData

    rng = np.random.default_rng(0)
    raw = RawData({"x": rng.normal(size=(64, 6)).astype(np.float32), "y": rng.integers(0, 3, 64)},
                  {"x": "vector", "y": "categorical"})
    torch.manual_seed(0)
    return build_model({"model": "mvae", "latent_dim": 4, "modalities": {
        "x": {"kind": "vector", "dim": 6, "hidden": [16]}, "y": {"kind": "categorical", "num_classes": 3}}}, raw)


@pytest.mark.parametrize("scale", [1e3, 1e4, 1e5, 5e5])  # the training data has std ~1: up to 5e5 std
def test_huge_inputs_give_finite_posteriors_and_losses(vector_model, scale):
    x = torch.full((5, 6), scale) * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    mod = vector_model.modalities["x"]
    raw_logvar = mod.encoder(mod.features(x)).chunk(2, dim=-1)[1]
    # without the clamp, exp(logvar) overflows float32 (exp(89) is inf) for these inputs
    assert torch.isinf(torch.exp(raw_logvar.abs())).any()
    assert_finite_everywhere(vector_model, x)


@pytest.mark.parametrize("scale", [2e6, 1e20, 3e38])
def test_inputs_absurdly_far_from_the_training_data_are_refused(vector_model, scale):
    """Finding F7: beyond ~1e19 standard deviations the KL term (mu^2) overflows float32 and near 3e38 the
    codes are NaN. Inputs over 1e6 training standard deviations are refused with an InputError naming the
    modality, in every user call (without the check, these calls return non-finite numbers instead)."""
    x = torch.full((5, 6), scale) * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    x[0] = 0.0  # the first row is fine: the message points at row 1
    calls = [lambda: vector_model.encode({"x": x}), lambda: vector_model.as_batch({"x": x, "y": [0, 1, 2, 0, 1]}),
             lambda: vector_model.generate({"x": x}, targets=["x"], raw=True),
             lambda: vector_model.encode({"x": x.double().numpy()})]
    for call in calls:
        with pytest.raises(InputError, match=r"'x'.*standard deviations from the training mean.*row: 1"):
            call()
    if scale >= 1e20:  # what the check prevents: unchecked, the modality's KL term is not finite
        assert not torch.isfinite(vector_model.modalities["x"].encode(x).kl_standard()).all()


def assert_finite_everywhere(model, x: torch.Tensor) -> None:
    mod = model.modalities["x"]
    q = mod.encode(x)
    assert LOGVAR_MIN <= float(q.logvar.min()) and float(q.logvar.max()) <= LOGVAR_MAX
    assert torch.isfinite(q.std).all() and torch.isfinite(q.kl_standard()).all()
    batch = model.as_batch({"x": x, "y": [0, 1, 2, 0, 1]})
    model.train()
    try:
        out = model.loss(batch)
    finally:
        model.eval()
    assert torch.isfinite(out.total) and all(torch.isfinite(v).all() for v in out.terms.values())
    z = model.encode({"x": x})
    assert torch.isfinite(z).all()
    assert torch.isfinite(model.generate({"x": x}, targets=["x"], raw=True)["x"]).all()


def test_poe_of_extreme_experts_stays_finite():
    from omnivae.fusion import product_of_experts

    mu = torch.tensor([[[1e4, -1e4]], [[3.0, 0.0]]])  # [M=2, B=1, D=2]
    logvar = torch.tensor([[[LOGVAR_MIN, LOGVAR_MAX]], [[LOGVAR_MAX, LOGVAR_MIN]]])
    q = product_of_experts(mu, logvar, torch.ones(1, 2, 1, dtype=torch.bool))
    assert torch.isfinite(q.mu).all() and torch.isfinite(q.logvar).all()
    assert torch.isfinite(q.kl_standard()).all()
