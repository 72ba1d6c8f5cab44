"""Training runs on a tiny in-memory data set: run folder layout, refusal to clobber,
resume, checkpoint integrity, KL warm-up and non-finite losses."""
from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import omnivae
import omnivae.run
import omnivae.run_folder
import omnivae.threads
import omnivae.train.trainer
from omnivae import ConfigError, LossOutput, ModelFileError, TrainingError, build_model
from omnivae.data.tensors import TensorData
from omnivae.run import train_run
from omnivae.train.checkpoint import CheckpointWarning, read_checkpoint, write_checkpoint
from omnivae.train.config import TrainConfig
from omnivae.train.module import OmniModule
from omnivae.train.trainer import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"max_epochs": 1, "batch_size": 16, "progress": False, "tensorboard": False, "log_every_n_steps": 1,
         "patience": None, "num_threads": 1, "lr": 3e-3}
MODEL = {"model": "mvae", "latent_dim": 4,
         "modalities": {"image": {"arch": "mlp", "hidden": [16]}, "label": {"hidden": [8]}}}


def run_config(**train):
    return {"data": {"source": "tiny", "test_fraction": 0.1}, "model": MODEL, "train": {**TRAIN, **train}}


@pytest.fixture
def tiny_source(monkeypatch, make_raw):
    """Feed a 48-example image + label RawData to train_run in place of a named source."""
    raw = make_raw(48)
    monkeypatch.setattr(omnivae.run, "load_source", lambda config: raw)
    return raw


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_raw):
    """One epoch of training into an earlier run folder that held an old file (overwrite=True)."""
    raw = make_raw(48)
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    run_dir.mkdir()
    (run_dir / "omnivae-run.json").write_text("{}")  # an omnivae run folder: the only kind replaced
    (run_dir / "old-result.txt").write_text("stale")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(omnivae.run, "load_source", lambda config: raw)
        result = train_run(run_config(), run_dir, overwrite=True)
    torch.set_num_threads(threads)
    return result


def metric_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_folder_layout(finished_run, make_tensors):
    run_dir = finished_run.run_dir
    for rel in ("run.yaml", "model/config.json", "model/model.safetensors", "checkpoints/last.ckpt",
                "logs/metrics.csv"):
        assert (run_dir / rel).is_file(), rel
    assert not (run_dir / "old-result.txt").exists()
    saved = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert saved["model"]["modalities"]["image"]["shape"] == [1, 8, 8]  # resolved from the data
    assert saved["model"]["modalities"]["label"]["num_classes"] == 3
    assert saved["train"]["max_epochs"] == 1
    loaded = omnivae.load(run_dir / "model")
    data = {k: v for k, v in make_tensors(4).items() if k in loaded.names}
    torch.testing.assert_close(loaded.encode(data), finished_run.model.encode(data))
    splits = finished_run.splits
    assert (len(splits.train), len(splits.val), len(splits.test)) == (38, 5, 5)
    rows = metric_rows(run_dir / "logs" / "metrics.csv")
    assert any(r.get("train/loss_step") for r in rows) and any(r.get("val/loss") for r in rows)
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == math.ceil(38 / 16) and ckpt["epoch"] == 0


def test_existing_run_folder_is_left_untouched(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "notes.txt").write_text("keep me")
    (run_dir / "logs" / "metrics.csv").write_text("a,b\n1,2\n")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    def must_not_load(config):
        raise AssertionError("data was loaded before the folder check")
    monkeypatch.setattr(omnivae.run, "load_source", must_not_load)
    with pytest.raises(ConfigError, match="already exists"):
        train_run(run_config(), run_dir)
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


def test_resume_without_run_yaml_is_a_config_error(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match="no run.yaml"):
        train_run(None, tmp_path / "elsewhere", resume=True)


@pytest.fixture
def fresh_run(tmp_path, tiny_source):
    """A one-epoch run in tmp_path/run, to be resumed in place."""
    return train_run(run_config(), tmp_path / "run")


def set_max_epochs(run_dir, epochs):
    config = yaml.safe_load((run_dir / "run.yaml").read_text())
    config["train"]["max_epochs"] = epochs
    (run_dir / "run.yaml").write_text(yaml.safe_dump(config))


def test_resume_continues_from_last_checkpoint(fresh_run):
    run_dir = fresh_run.run_dir
    first = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    old_rows = metric_rows(run_dir / "logs" / "metrics.csv")
    set_max_epochs(run_dir, 2)
    train_run(None, run_dir, resume=True)
    second = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert second["epoch"] == 1 and second["global_step"] == 2 * first["global_step"]
    # the first attempt's metrics are kept beside the new ones, and steps go on from there
    assert metric_rows(run_dir / "logs" / "metrics.part-000.csv") == old_rows
    new_steps = [int(r["step"]) for r in metric_rows(run_dir / "logs" / "metrics.csv") if r.get("train/loss_step")]
    assert new_steps and min(new_steps) >= first["global_step"]
    assert omnivae.load(run_dir / "model").config == fresh_run.model.config


def test_resume_in_a_moved_run_folder_updates_last_checkpoint(fresh_run, tmp_path):
    # ModelCheckpoint ignores its saved state when the folder moved; with a version counter it
    # would write last-v1.ckpt and leave last.ckpt (what the next resume reads) at the old epoch
    moved = tmp_path / "moved"
    shutil.move(fresh_run.run_dir, moved)
    set_max_epochs(moved, 2)
    train_run(None, moved, resume=True)
    assert read_checkpoint(moved / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not list((moved / "checkpoints").glob("*-v1.ckpt"))


def test_resume_skips_a_damaged_last_checkpoint_with_a_warning(fresh_run):
    run_dir = fresh_run.run_dir
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    set_max_epochs(run_dir, 2)
    with pytest.warns(CheckpointWarning, match="last.ckpt"):
        train_run(None, run_dir, resume=True)
    assert read_checkpoint(last)["epoch"] == 1


def test_resume_with_no_intact_checkpoint_fails_cleanly(fresh_run):
    run_dir = fresh_run.run_dir
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(ckpt.read_bytes()[:-1])
    with pytest.raises(ModelFileError, match="no checkpoint is intact"):
        train_run(None, run_dir, resume=True)


def test_truncated_or_damaged_checkpoint_is_refused(finished_run, tmp_path):
    blob = (finished_run.run_dir / "checkpoints" / "last.ckpt").read_bytes()
    path = tmp_path / "last.ckpt"
    for damaged in (blob[: len(blob) // 2], blob[:-1], b"", blob[:100] + bytes([blob[100] ^ 1]) + blob[101:]):
        path.write_bytes(damaged)
        with pytest.raises(ModelFileError, match="last.ckpt"):
            read_checkpoint(path)
    path.write_bytes(blob)
    assert read_checkpoint(path)["global_step"] > 0


def test_checkpoint_round_trip_and_no_code_execution(tmp_path):
    path = tmp_path / "c.ckpt"
    write_checkpoint({"global_step": 3, "state_dict": {"w": torch.ones(2)}}, path)
    out = read_checkpoint(path)
    assert out["global_step"] == 3 and torch.equal(out["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]  # no temp file left

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))
    write_checkpoint({"evil": Payload()}, path)  # a valid trailer around a hostile pickle
    with pytest.raises(Exception):
        read_checkpoint(path)
    assert not (tmp_path / "marker").exists()


def test_missing_checkpoint_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="none.ckpt.*does not exist"):
        read_checkpoint(tmp_path / "none.ckpt")


# -- the Lightning module, driven by fit() -----------------------------------------------------
@pytest.fixture
def tiny_fit(tiny_config, make_raw, tmp_path):
    """fit(model, ...) on 32 examples with batch size 8 (4 steps per epoch)."""
    def run(model_loss=None, before_fit=None, **train):
        raw = make_raw(32)
        torch.manual_seed(0)
        model = build_model(tiny_config("mvae"), raw)
        if before_fit is not None:
            before_fit(model)
        if model_loss is not None:
            original = model.loss
            model.loss = lambda batch, beta_scale=1.0: model_loss(original, batch, beta_scale)
        config = TrainConfig.from_dict({**TRAIN, "batch_size": 8, **train})
        result = fit(model, TensorData.from_raw(model, raw), None, config, tmp_path / "fit")
        return model, result
    return run


def test_kl_warmup_scales_beta(tiny_fit):
    seen = []

    def record(loss, batch, beta_scale):
        seen.append(beta_scale)
        return loss(batch, beta_scale)
    _, result = tiny_fit(record, kl_warmup_epochs=1.5, max_epochs=3)
    assert result.module.warmup_steps == 6
    want = [min(1.0, step / 6) for step in range(12)]
    assert seen == pytest.approx(want)
    rows = metric_rows(result.last_checkpoint.parent.parent / "logs" / "metrics.csv")
    logged = {int(r["step"]): float(r["beta_scale"]) for r in rows if r.get("beta_scale")}
    assert logged and all(v == pytest.approx(min(1.0, s / 6)) for s, v in logged.items())


def test_beta_scale_without_warmup_is_one(tiny_config):
    module = OmniModule(build_model(tiny_config("mvae")), TrainConfig(kl_warmup_epochs=0.0), steps_per_epoch=5)
    assert module.beta_scale() == 1.0
    module = OmniModule(build_model(tiny_config("mvae")), TrainConfig(kl_warmup_epochs=2.0), steps_per_epoch=5)
    assert module.warmup_steps == 10 and module.beta_scale() == 0.0  # step 0, no trainer yet


def nan_at(calls_to_fail):
    """A loss wrapper returning NaN on the given training calls (0-based)."""
    count = {"n": 0}

    def wrapped(loss, batch, beta_scale):
        out = loss(batch, beta_scale)
        if not torch.is_grad_enabled():
            return out
        i = count["n"]
        count["n"] += 1
        if i in calls_to_fail:
            nan = out.total * float("nan")
            return LossOutput(nan, {**out.terms, "loss": nan.detach()})
        return out
    return wrapped


def test_nan_loss_stops_training_naming_the_step(tiny_fit):
    with pytest.raises(TrainingError, match=r"step 2 \(epoch 0, batch 2\).*'loss'"):
        tiny_fit(nan_at({2}), max_epochs=2)


def test_nan_gradient_with_finite_loss_stops_training(tiny_fit):
    model_holder = {}

    def poison(loss, batch, beta_scale):
        out = loss(batch, beta_scale)
        if torch.is_grad_enabled():
            weight = model_holder["w"]  # sqrt(0 * w) is 0; its gradient is inf * 0 = NaN
            out = LossOutput(out.total + torch.sqrt(0.0 * weight.sum()), out.terms)
        return out
    with pytest.raises(TrainingError, match="non-finite gradient at step 0"):
        tiny_fit(poison, max_epochs=1, before_fit=lambda m: model_holder.update(
            w=m.modalities["label"].decoder[0].weight))


def test_nan_loss_can_be_skipped(tiny_fit):
    model, result = tiny_fit(nan_at({1, 5}), on_nonfinite="skip", max_epochs=2)
    assert result.module.skipped == 2
    assert result.trainer.current_epoch == 2  # both epochs ran to the end
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_in_train_run_keeps_the_last_good_checkpoint(tmp_path, tiny_source, monkeypatch):
    from omnivae.models.mvae import MVAE

    wrapper = nan_at({4})  # 3 steps per epoch: the second epoch's second step
    original = MVAE.loss
    monkeypatch.setattr(MVAE, "loss", lambda self, batch, beta_scale=1.0: wrapper(
        lambda b, s: original(self, b, s), batch, beta_scale))
    with pytest.raises(TrainingError, match="step 4"):
        train_run(run_config(max_epochs=3), tmp_path / "run")
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 0
    assert omnivae.load(tmp_path / "run" / "model").names == ["image", "label"]


# -- seeding, crash-safe run folder, non-zero ranks ---------------------------------------------
class Stop(Exception):
    """Raised by a stand-in for fit(): the test only needs what happened before training."""


def initial_weights(monkeypatch, run_dir, seed, global_seed):
    """The weights train_run hands to fit(), with the global RNGs left in another state each time."""
    seen = {}

    def no_fit(model, *args, **kwargs):
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        raise Stop
    monkeypatch.setattr(omnivae.train.trainer, "fit", no_fit)  # train_run imports it when called
    torch.manual_seed(global_seed)  # what the caller did before must not matter
    with pytest.raises(Stop):
        train_run(run_config(seed=seed), run_dir)
    return seen


def test_same_seed_gives_the_same_initial_weights(tmp_path, tiny_source, monkeypatch):
    a = initial_weights(monkeypatch, tmp_path / "run1", seed=5, global_seed=1)
    b = initial_weights(monkeypatch, tmp_path / "run2", seed=5, global_seed=2)
    c = initial_weights(monkeypatch, tmp_path / "run3", seed=6, global_seed=1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    saved = omnivae.load(tmp_path / "run1" / "model").state_dict()  # model/ holds them too
    assert all(torch.equal(saved[k], a[k]) for k in a)


def crash_between_the_renames(model, folder):
    """save_model in a forked child that dies (no cleanup) right before its second rename."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            calls, replace = [], os.replace

            def dying_replace(src, dst):
                calls.append(dst)
                if len(calls) == 2:
                    os._exit(9)
                replace(src, dst)
            os.replace = dying_replace
            omnivae.save(model, folder)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9
    assert not folder.exists() and list(folder.parent.glob(f".{folder.name}.old-*"))


def test_resume_after_a_crash_inside_the_model_swap(fresh_run):
    run_dir = fresh_run.run_dir
    crash_between_the_renames(fresh_run.model, run_dir / "model")  # as if the final save was killed
    set_max_epochs(run_dir, 2)
    train_run(None, run_dir, resume=True)
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert omnivae.load(run_dir / "model").config == fresh_run.model.config
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # leftovers removed


def test_run_yaml_is_written_atomically_after_the_model(tmp_path, tiny_source, monkeypatch):
    real = omnivae.run_folder.atomic_write_bytes

    def killed(path, payload):  # the process dies as it writes run.yaml (the run marker is written before)
        if Path(path).name == "run.yaml":
            raise Stop
        real(path, payload)
    monkeypatch.setattr(omnivae.run_folder, "atomic_write_bytes", killed)
    with pytest.raises(Stop):
        train_run(run_config(), tmp_path / "run")
    assert (tmp_path / "run" / "model" / "config.json").is_file() and not (tmp_path / "run" / "run.yaml").exists()
    with pytest.raises(ConfigError, match="no run.yaml.*--overwrite"):  # so resume never lacks a model
        train_run(None, tmp_path / "run", resume=True)


@pytest.mark.parametrize("env, worker", [({}, False), ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, False),
                                         ({"LOCAL_RANK": "1"}, True), ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, True),
                                         ({"RANK": "3"}, True), ({"GLOBAL_RANK": "2"}, True)])
def test_launched_as_worker_reads_the_launchers_variables(monkeypatch, env, worker):
    for key in ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from omnivae.train.trainer import launched_as_worker

    assert launched_as_worker() is worker


def test_a_non_zero_rank_leaves_the_run_folder_to_rank_zero(tmp_path, tiny_source, monkeypatch):
    # Lightning's ddp launcher re-runs the command with LOCAL_RANK=1 once rank 0 has set up the folder
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("rank zero's")
    (run_dir / "run.yaml").write_text("rank zero's")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    seen = {}

    def no_fit(model, train, val, config, folder, resume=False):
        seen["run_dir"] = folder
        raise Stop
    monkeypatch.setattr(omnivae.train.trainer, "fit", no_fit)  # train_run imports it when called
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(Stop):
        train_run(run_config(), run_dir, overwrite=True)
    assert seen["run_dir"] == run_dir
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_max_steps_shorter_than_an_epoch_with_early_stopping(tmp_path, tiny_source, recwarn):
    # early stopping and the best checkpoint read val/loss after validation only: a run that
    # max_steps stops mid-epoch (no validation yet) trains, saves, and says nothing alarming
    result = train_run(run_config(max_steps=1, batch_size=8, patience=3), tmp_path / "run")
    assert result.steps_trained == 1 and (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert not [w for w in recwarn if "val/loss" in str(w.message)]


@pytest.mark.parametrize("cores, processes, busy, want", [
    (2, 1, 0.3, 2),   # a quiet machine (this process's own start-up): every core
    (2, 1, 1.2, 1),   # one busy program: one thread
    (2, 1, 3.0, 1),   # more busy programs than cores: still one
    (8, 2, 0.0, 4),   # two DDP processes share the cores
    (8, 2, 5.4, 3),   # ... and what other programs leave free
    (8, 1, 1.6, 6),
])
def test_default_threads_leave_busy_cores_alone(cores, processes, busy, want):
    assert omnivae.threads.default_threads(cores, processes, busy) == want


def test_busy_elsewhere_without_proc_stat_leaves_out_this_process(monkeypatch):
    """Without /proc/stat, the load average: this test process has been running (busy) for a while,
    its own share is taken off, so what remains is at most the average itself and never negative."""
    monkeypatch.setattr(omnivae.threads, "cpu_ticks", lambda: (_ for _ in ()).throw(OSError("no /proc/stat")))
    assert omnivae.threads.busy_now() is None
    busy = omnivae.threads.busy_elsewhere()
    assert 0.0 <= busy <= os.getloadavg()[0]
    assert 0 < omnivae.threads.process_age() < 7 * 24 * 3600


def test_busy_now_counts_other_programs_not_this_one(monkeypatch):
    """Ticks from /proc/stat: 2 cores, 40 ticks in the window, 10 idle -> 1.5 cores busy; this
    process used 0.15 s of CPU in the 0.15 s window (one core), so other programs keep 0.5 busy."""
    ticks = iter([(1000, 400), (1040, 410)])
    times = iter([os.times_result((1.0, 0.0, 0.0, 0.0, 0.0)), os.times_result((1.15, 0.0, 0.0, 0.0, 0.0))])
    monkeypatch.setattr(omnivae.threads, "cpu_ticks", lambda: next(ticks))
    monkeypatch.setattr(os, "times", lambda: next(times))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(omnivae.threads.time, "sleep", lambda s: None)
    assert omnivae.threads.busy_now(0.15) == pytest.approx(0.5)


def test_busy_now_sees_a_program_that_just_started():
    """A spinning process started a moment ago: the load average has not caught up with it, the
    tick count has (at least half a core of the 2 it may use; other load only adds)."""
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.3)
        assert omnivae.threads.busy_now(0.3) >= 0.5
    finally:
        spin.kill()
        spin.wait()


def test_set_threads_reads_what_other_programs_keep_busy(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    try:
        monkeypatch.setattr(omnivae.threads, "busy_now", lambda: 1.2)
        omnivae.train.trainer.set_threads(TrainConfig())
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(omnivae.threads, "busy_now", lambda: 0.1)
        omnivae.train.trainer.set_threads(TrainConfig())
        assert torch.get_num_threads() == 2
        omnivae.train.trainer.set_threads(TrainConfig(num_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_evaluation_threads_follow_the_load(monkeypatch):
    from omnivae.tasks.evaluate import limited_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(omnivae.threads, "busy_elsewhere", lambda: 1.4)
    with limited_threads("auto"):
        assert torch.get_num_threads() == 1
    monkeypatch.setattr(omnivae.threads, "busy_elsewhere", lambda: 0.2)
    with limited_threads("auto"):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="'auto' or None"):
        with limited_threads("many"):
            pass
