"""Where a run's time goes (omnivae.train.timing): laps between train_run's phases, and the
split of fit into steps, validation and checkpoint writes recorded in omnivae-run.json."""
from __future__ import annotations

import time

from omnivae.data.tensors import TensorData
from omnivae.models import build_model
from omnivae.train import timing
from omnivae.train.checkpoint import AtomicCheckpointIO
from omnivae.train.config import TrainConfig
from omnivae.train.trainer import fit


def test_laps_charge_the_time_since_the_previous_lap(monkeypatch):
    now = iter([10.0, 10.5, 12.0, 12.25])  # the clock at Laps(), then at each lap
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(now))
    laps = timing.Laps()
    assert laps.lap("data") == 0.5
    laps.lap("model")
    laps.lap("data")
    assert laps.seconds == {"data": 0.75, "model": 1.5}


def test_process_age_counts_from_the_process_start():
    age = timing.process_age()
    assert age is not None and 0 < age < time.monotonic() + 1  # the test process started before this test
    time.sleep(0.05)
    assert timing.process_age() >= age


def test_phase_clock_splits_fit_into_steps_validation_and_checkpoints(tmp_path, make_raw, tiny_config, one_thread,
                                                                      monkeypatch):
    """Every checkpoint write is made 0.2 s slower: the clock charges that to checkpoints (2 writes: last
    after each of 2 epochs, each copied to best while validation improves), not to validation or steps;
    the parts add up to fit's time."""
    delay, real_save = 0.2, AtomicCheckpointIO.save_checkpoint

    def slow_save(self, *args, **kwargs):
        time.sleep(delay)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", slow_save)
    raw = make_raw(48)
    model = build_model(tiny_config("mvae"), raw)
    train, val = TensorData.from_raw(model, raw.subset(slice(0, 40))), TensorData.from_raw(model, raw.subset(slice(40, 48)))
    config = TrainConfig(max_epochs=2, batch_size=8, progress=False, tensorboard=False, patience=None)
    started = time.perf_counter()
    result = fit(model, train, val, config, tmp_path / "run")
    phases = result.clock.record(time.perf_counter() - started)
    assert result.clock.steps == result.trainer.global_step == 10
    assert 2 * delay <= phases["checkpoints_s"] < 3 * delay
    assert 0 < phases["validation_s"] < delay and 0 < phases["steps_s"]
    assert phases["other_s"] >= 0 and phases["setup_s"] >= 0 and phases["teardown_s"] >= 0
    assert "save_checkpoint" not in result.trainer.__dict__  # the Trainer's own method is back


def test_train_run_records_its_phases(tmp_path, one_thread):
    from omnivae.run import train_run
    from omnivae.run_folder import RunFolder

    config = {"data": {"source": "shapes", "options": {"n": 60, "level": "easy"}},
              "model": {"model": "mvae", "latent_dim": 4, "conditional_prior": None,
                        "modalities": {"image": {"arch": "mlp", "hidden": [16]}}},
              "train": {"max_epochs": 1, "batch_size": 16, "progress": False, "tensorboard": False}}
    result = train_run(config, tmp_path / "run")
    record = RunFolder(tmp_path / "run").training_record()
    phases = record["phases"]
    assert set(phases) == {"startup_s", "data_s", "model_s", "prepare_s", "priors_s", "save_s", "fit", "fit_steps"}
    assert phases["fit_steps"] == record["steps"] == result.steps_trained == 3  # ceil(48 / 16)
    assert all(phases[k] >= 0 for k in ("data_s", "model_s", "prepare_s", "priors_s", "save_s"))
    assert phases["startup_s"] > 0
    fit_total = sum(phases["fit"].values())
    assert fit_total <= record["wall_seconds"] + 1e-3
    assert phases["fit"]["steps_s"] > 0 and phases["fit"]["checkpoints_s"] > 0



def test_train_run_records_the_conditional_prior_fit_as_a_second_training_stage(tmp_path, one_thread):
    """With a conditional prior, the record holds the prior's own optimiser steps and their seconds
    (within the priors phase, which also encodes the training data)."""
    from omnivae.run import train_run
    from omnivae.run_folder import RunFolder

    config = {"data": {"source": "shapes", "options": {"n": 60, "level": "easy"}},
              "model": {"model": "mvae", "latent_dim": 4, "conditional_prior": {"hidden": [8], "steps": 7},
                        "modalities": {"image": {"arch": "mlp", "hidden": [16]}}},
              "train": {"max_epochs": 1, "batch_size": 16, "progress": False, "tensorboard": False}}
    result = train_run(config, tmp_path / "run")
    phases = RunFolder(tmp_path / "run").training_record()["phases"]
    prior = phases["prior_fit"]
    assert prior["steps"] == 7 and prior["batch_size"] == 48  # the config's steps; batch capped at the 48 codes
    assert 0 < prior["steps_s"] <= phases["priors_s"]
    assert result.model.conditional_prior.last_fit == prior
