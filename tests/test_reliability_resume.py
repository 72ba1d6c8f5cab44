"""Resuming: data order and RNG state make a resumed run repeat the uninterrupted one;
damaged checkpoints fall back to an older good one (with a warning) or fail clearly;
checkpoint writes are atomic."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError, ModelFileError
from omnivae.models import build_model
from omnivae.train import checkpoint as ckpt_module
from omnivae.train.checkpoint import (CheckpointWarning, read_checkpoint, resume_checkpoint, verify_checkpoint,
                                      write_checkpoint)
from omnivae.train.config import TrainConfig
from omnivae.train.sampler import EpochSampler, ResumableLoader
from omnivae.train.trainer import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BASE = dict(max_epochs=4, batch_size=8, lr=3e-3, progress=False, tensorboard=False, patience=None,
            num_threads=1, log_every_n_steps=2, seed=3)


class Crash(Exception):
    """Stands in for a crash in the middle of training."""


class CrashAt:
    """Callback raising Crash once `global_step` reaches `step`: at the end of a training batch
    (after that step's checkpoint), or when validation starts (hook="validation")."""

    def __new__(cls, step: int, hook: str = "batch"):
        from lightning.pytorch.callbacks import Callback

        class _Crash(Callback):
            def on_train_batch_end(self, trainer, *args):
                if hook == "batch" and trainer.global_step >= step:
                    raise Crash(f"crash at step {trainer.global_step}")

            def on_validation_start(self, trainer, *args):
                if hook == "validation" and trainer.global_step >= step:
                    raise Crash(f"crash in validation at step {trainer.global_step}")
        return _Crash()


@pytest.fixture
def setup(make_raw, tiny_config):
    """Builder of (model, train, val) with the same initial weights every call."""
    raw = make_raw(n=60, seed=1, names=("image", "label", "vector"))
    train_raw, val_raw = raw.split((0.8, 0.2), seed=0)

    def build():
        torch.manual_seed(0)
        model = build_model(tiny_config("mvae", names=("image", "label", "vector")), train_raw)
        return model, TensorData.from_raw(model, train_raw), TensorData.from_raw(model, val_raw)
    return build


def run(setup, run_dir, resume=False, crash_at=None, crash_hook="batch", **options):
    model, train, val = setup()
    config = TrainConfig(**{**BASE, **options})
    if crash_at is None:
        return fit(model, train, val, config, run_dir, resume=resume)
    import omnivae.train.trainer as trainer_module
    original = trainer_module.make_trainer

    def with_crash(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(CrashAt(crash_at, crash_hook))
        return trainer
    trainer_module.make_trainer = with_crash
    try:
        with pytest.raises(Crash):
            fit(model, train, val, config, run_dir, resume=resume)
    finally:
        trainer_module.make_trainer = original


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def assert_same(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff <= tol, f"weights differ by {diff}"


# -- data order ------------------------------------------------------------------------------
def test_data_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=7), EpochSampler(50, seed=7)
    orders = []
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)  # same (seed, epoch): same order, whatever came before
        assert sorted(a) == list(range(50))
        orders.append(list(a))
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch
    c = EpochSampler(50, seed=8)
    assert list(c) != orders[0]
    a.set_epoch(1)
    assert list(a) == orders[1]  # going back to an epoch repeats it exactly


def test_data_order_does_not_touch_global_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    loader = ResumableLoader(TensorData({"x": torch.arange(20.0)[:, None]}, {"x": torch.ones(20, dtype=torch.bool)}),
                             batch_size=6, seed=1)
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        list(loader)
    assert torch.equal(before[0], torch.get_rng_state()) and np.array_equal(before[1], np.random.get_state()[1])


def test_loader_state_skips_exactly_the_batches_already_trained():
    data = TensorData({"x": torch.arange(30.0)[:, None]}, {"x": torch.ones(30, dtype=torch.bool)})
    full = ResumableLoader(data, batch_size=4, seed=5)
    full.sampler.set_epoch(2)
    batches = [b.data["x"].flatten().tolist() for b in full]
    it = iter(full)
    for _ in range(3):
        next(it)
    state = full.state_dict()
    assert state["epoch"] == 2 and state["batches"] == 3
    resumed = ResumableLoader(data, batch_size=4, seed=5)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # what Lightning does before the epoch restarts
    rest = [b.data["x"].flatten().tolist() for b in resumed]
    assert rest == batches[3:]
    resumed.sampler.set_epoch(3)  # the skip applies to the interrupted epoch only
    assert sum(len(b) for b in resumed) == 30


def test_shards_of_processes_cover_the_data_with_equal_lengths(monkeypatch):
    from omnivae.train import sampler as sampler_module

    shards = []
    for rank in range(3):
        monkeypatch.setattr(sampler_module, "process_group", lambda rank=rank: (rank, 3))
        s = EpochSampler(10, seed=0)
        shards.append(list(s))
        assert len(s) == len(shards[-1]) == 4
    assert set(sum(shards, [])) == set(range(10))


# -- exact continuation ----------------------------------------------------------------------
def test_resume_after_a_crash_repeats_the_uninterrupted_run(setup, tmp_path):
    run(setup, tmp_path / "ref")
    reference = final_weights(tmp_path / "ref")
    # crash mid-epoch (step 9 of 6 per epoch) with step checkpoints every 2 steps: resumes at step 8
    run(setup, tmp_path / "a", crash_at=9, checkpoint_every_n_steps=2)
    assert read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["global_step"] == 8
    run(setup, tmp_path / "a", resume=True, checkpoint_every_n_steps=2)
    assert_same(reference, final_weights(tmp_path / "a"))
    # epoch-end checkpoints only: the crashed epoch restarts from its beginning
    run(setup, tmp_path / "b", crash_at=9)
    assert read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["global_step"] == 6
    run(setup, tmp_path / "b", resume=True)
    assert_same(reference, final_weights(tmp_path / "b"))


def test_crash_in_validation_then_mid_epoch_resumes_exactly(setup, tmp_path):
    """Regression (found by the kill test): a step checkpoint taken after an epoch's last batch
    resumed through Lightning's restart-on-last-batch path, which left the next epoch's
    counters behind; a second, mid-epoch crash then restarted that epoch from batch 0."""
    run(setup, tmp_path / "ref")
    run(setup, tmp_path / "a", crash_at=12, crash_hook="validation", checkpoint_every_n_steps=3)
    assert read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["global_step"] == 9  # not 12
    run(setup, tmp_path / "a", resume=True, crash_at=16, checkpoint_every_n_steps=3)
    state = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 15 and state["loops"]["fit_loop"]["epoch_progress"]["total"]["ready"] == 3
    run(setup, tmp_path / "a", resume=True, checkpoint_every_n_steps=3)
    last = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 24
    assert_same(final_weights(tmp_path / "ref"), last["state_dict"])


def test_checkpoints_hold_rng_and_loader_state_as_plain_tensors(setup, tmp_path):
    run(setup, tmp_path, max_epochs=1)
    state = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # weights-only load works
    rng = state["callbacks"]["omnivae.RandomState"]
    assert isinstance(rng["torch"], torch.Tensor) and rng["torch"].dtype == torch.uint8
    assert isinstance(rng["numpy"][1], torch.Tensor) and isinstance(rng["python"][1], torch.Tensor)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["epoch"] == 0


def test_without_rng_restore_the_continuation_would_differ(setup, tmp_path, monkeypatch):
    """The comparison above can fail: drop the RNG restore and the weights drift apart."""
    from omnivae.train.callbacks import RandomState

    run(setup, tmp_path / "ref")
    run(setup, tmp_path / "a", crash_at=9, checkpoint_every_n_steps=2)
    monkeypatch.setattr(RandomState, "on_train_start", lambda *a: None)
    run(setup, tmp_path / "a", resume=True, checkpoint_every_n_steps=2)
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same(final_weights(tmp_path / "ref"), final_weights(tmp_path / "a"))


def test_last_checkpoint_is_written_every_epoch_even_without_improvement(setup, tmp_path):
    """With lr 0 the validation loss never improves (validation noise is fixed per batch):
    best.ckpt stays at epoch 0, but last.ckpt must follow every epoch."""
    run(setup, tmp_path, max_epochs=3, lr=0.0)
    folder = tmp_path / "checkpoints"
    assert read_checkpoint(folder / "best.ckpt")["epoch"] == 0
    assert read_checkpoint(folder / "last.ckpt")["epoch"] == 2
    assert read_checkpoint(folder / "previous.ckpt")["epoch"] == 1


# -- damaged checkpoints -----------------------------------------------------------------------
def damage(path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_damaged_last_falls_back_to_previous_and_still_reproduces(setup, tmp_path):
    run(setup, tmp_path / "ref")
    run(setup, tmp_path / "a", crash_at=9, checkpoint_every_n_steps=2)
    folder = tmp_path / "a" / "checkpoints"
    assert read_checkpoint(folder / "previous.ckpt")["global_step"] == 6  # the one before last (8)
    damage(folder / "last.ckpt")
    with pytest.warns(CheckpointWarning, match="previous.ckpt.*SHA-256"):
        run(setup, tmp_path / "a", resume=True, checkpoint_every_n_steps=2)
    assert_same(final_weights(tmp_path / "ref"), final_weights(tmp_path / "a"))


def test_damaged_last_and_previous_fall_back_to_best(setup, tmp_path):
    run(setup, tmp_path, max_epochs=2)
    folder = tmp_path / "checkpoints"
    damage(folder / "last.ckpt")
    (folder / "previous.ckpt").write_bytes(b"truncated")
    with pytest.warns(CheckpointWarning, match="best.ckpt"):
        assert resume_checkpoint(tmp_path) == folder / "best.ckpt"
    with pytest.warns(CheckpointWarning):
        run(setup, tmp_path, resume=True, max_epochs=3)
    assert read_checkpoint(folder / "last.ckpt")["epoch"] == 2


def test_no_good_checkpoint_is_a_clear_error(setup, tmp_path):
    run(setup, tmp_path, max_epochs=1)
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        damage(path)
    with pytest.raises(ModelFileError, match="no checkpoint is intact.*last.ckpt.*SHA-256"):
        run(setup, tmp_path, resume=True)


def test_resume_without_any_checkpoint_starts_over_with_a_warning(setup, tmp_path):
    with pytest.warns(CheckpointWarning, match="no checkpoint yet"):
        run(setup, tmp_path, resume=True, max_epochs=1)
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 0


def test_a_damaged_last_is_never_kept_as_previous(tmp_path):
    io = ckpt_module.AtomicCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"v": torch.tensor(1)}, last)
    io.save_checkpoint({"v": torch.tensor(2)}, last)
    assert int(read_checkpoint(tmp_path / "previous.ckpt")["v"]) == 1
    damage(last)
    io.save_checkpoint({"v": torch.tensor(3)}, last)
    assert int(read_checkpoint(tmp_path / "previous.ckpt")["v"]) == 1  # the good one stays
    assert int(read_checkpoint(last)["v"]) == 3


def test_stale_temp_files_are_removed_on_resume(setup, tmp_path):
    run(setup, tmp_path, max_epochs=1)
    stale = tmp_path / "checkpoints" / ".last.ckpt.tmp-99999"
    stale.write_bytes(b"half a checkpoint")
    run(setup, tmp_path, resume=True, max_epochs=2)
    assert not stale.exists()


# -- atomic writes -----------------------------------------------------------------------------
def test_an_interrupted_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    write_checkpoint({"v": torch.tensor(1)}, path)
    before = path.read_bytes()

    def dies(fd):
        raise KeyboardInterrupt("killed during fsync")
    monkeypatch.setattr(os, "fsync", dies)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint({"v": torch.tensor(2)}, path)
    assert path.read_bytes() == before
    verify_checkpoint(path)


@pytest.mark.parametrize("cut", [0, 10, -1, -41])
def test_truncated_checkpoints_are_refused(tmp_path, cut):
    path = tmp_path / "c.ckpt"
    write_checkpoint({"v": torch.arange(100)}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[:cut])
    with pytest.raises(ModelFileError):
        verify_checkpoint(path)
    with pytest.raises(ModelFileError):
        read_checkpoint(path)


def test_checkpoint_every_n_steps_is_validated():
    assert TrainConfig().checkpoint_every_n_steps is None
    with pytest.raises(ConfigError, match="checkpoint_every_n_steps"):
        TrainConfig.from_dict({"checkpoint_every_n_steps": 0})


def test_cli_resume_falls_back_past_a_damaged_last_checkpoint(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from omnivae.cli import app

    config = {"data": {"source": "shapes", "options": {"n": 120, "image_size": 16}},
              "model": {"model": "mvae", "latent_dim": 4, "modalities": {
                  "image": {"arch": "mlp", "hidden": [16]}, "text": {"hidden": 8, "embed_dim": 8, "max_len": 6}}},
              "train": {"max_epochs": 2, "batch_size": 32, "progress": False, "tensorboard": False,
                        "num_threads": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--config", str(tmp_path / "run.yaml"), "--out", str(out)]).exit_code == 0
    damage(out / "checkpoints" / "last.ckpt")
    saved = yaml.safe_load((out / "run.yaml").read_text())
    saved["train"]["max_epochs"] = 3
    (out / "run.yaml").write_text(yaml.safe_dump(saved))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert any(issubclass(w.category, CheckpointWarning) for w in caught)
    assert read_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 2


def test_a_last_written_by_this_process_is_kept_without_reading_it_back(tmp_path, monkeypatch):
    """Keeping last.ckpt as previous.ckpt checks it first, unless it is still the very file this
    process wrote (same inode, size and time): then the 13 MB read and hash are skipped."""
    checked = []
    monkeypatch.setattr(ckpt_module, "verify_checkpoint", lambda path, real=ckpt_module.verify_checkpoint:
                        (checked.append(Path(path).name), real(path))[1])
    io = ckpt_module.AtomicCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"v": torch.tensor(1)}, last)
    io.save_checkpoint({"v": torch.tensor(2)}, last)
    assert checked == [] and int(read_checkpoint(tmp_path / "previous.ckpt")["v"]) == 1
    ckpt_module.AtomicCheckpointIO().save_checkpoint({"v": torch.tensor(3)}, last)  # another process's writer
    assert checked == ["last.ckpt"] and int(read_checkpoint(tmp_path / "previous.ckpt")["v"]) == 2


def test_a_new_best_is_a_copy_of_the_last_checkpoint_of_its_step(setup, tmp_path, monkeypatch):
    """One serialisation per epoch: a best found at an epoch's end is last.ckpt of that step copied
    (a file of its own, so damage to one leaves the other); epochs that do not improve leave it."""
    written = []
    real = ckpt_module.write_checkpoint
    monkeypatch.setattr(ckpt_module, "write_checkpoint",
                        lambda state, path: (written.append(Path(path).name), real(state, path))[1])
    result = run(setup, tmp_path, max_epochs=3)
    folder = tmp_path / "checkpoints"
    assert written == ["last.ckpt"] * 3
    per_epoch = result.trainer.global_step // 3
    best, last = read_checkpoint(folder / "best.ckpt"), read_checkpoint(folder / "last.ckpt")
    assert best["global_step"] in {per_epoch, 2 * per_epoch, 3 * per_epoch} and last["global_step"] == 3 * per_epoch
    assert os.stat(folder / "best.ckpt").st_ino != os.stat(folder / "last.ckpt").st_ino
    if best["global_step"] == last["global_step"]:
        assert (folder / "best.ckpt").read_bytes() == (folder / "last.ckpt").read_bytes()
    else:  # the older best is the one previous.ckpt or an earlier last held: its weights, not the final ones
        assert not all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())
