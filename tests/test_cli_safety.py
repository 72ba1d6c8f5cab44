"""Nothing lost, nothing surprising (issue 14): run folders are only replaced when they are
omnivae runs, and only after the options are known to be good; SIGTERM / SIGINT stop
training with a checkpoint and a non-zero exit that --resume continues; damaged or NaN
weights are refused; --resume takes the changes that are safe and refuses the rest;
impute never overwrites its input; `bench --quick` keeps the committed results and finds
MNIST in the documented cache; unknown caption words are reported and --n is bounded."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import omnivae
import omnivae.run
from omnivae.cli import app
from omnivae.errors import ModelFileError
from omnivae.io import CONFIG_FILE, WEIGHTS_FILE
from omnivae.train.checkpoint import read_checkpoint

runner = CliRunner()

TINY = {
    "data": {"source": "shapes", "options": {"n": 240, "level": "easy", "image_size": 16}, "test_fraction": 0.1},
    "model": {"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [32]}, "text": {"hidden": 16, "embed_dim": 8, "max_len": 6}}},
    "train": {"max_epochs": 1, "batch_size": 32, "progress": False, "tensorboard": False, "num_threads": 1,
              "patience": None},
}


def write_config(folder: Path, config: dict = TINY, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def text(result) -> str:
    """The command's output (stdout and stderr) on one line, for matching words."""
    return " ".join((result.output or "").split())


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished one-epoch run folder made by `omnivae train` (copy it before changing it)."""
    base = tmp_path_factory.mktemp("trained")
    out = base / "run"
    result = runner.invoke(app, ["train", "--config", str(write_config(base)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


def unrelated_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    (folder / "notes").mkdir(parents=True)
    (folder / "keep.txt").write_text("precious")
    (folder / "notes" / "todo.md").write_text("- nothing to lose")
    return folder


# -- 1. run folders ---------------------------------------------------------------------
def test_bad_model_leaves_an_unrelated_folder_alone(tmp_path):
    folder = unrelated_folder(tmp_path)
    before = tree(folder)
    result = runner.invoke(app, ["demo", "--out", str(folder), "--model", "nope", "--n", "60", "--minutes", "0.01",
                                 "--no-progress"])
    assert result.exit_code != 0, result.output
    assert tree(folder) == before
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["model"]["model"] = "nope"
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path, bad)), "--out", str(folder),
                                 "--overwrite"])
    assert result.exit_code == 2, result.output
    assert tree(folder) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = unrelated_folder(tmp_path)
    before = tree(folder)
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path)), "--out", str(folder),
                                 "--overwrite"])
    assert result.exit_code == 2, result.output
    assert str(folder.name) in text(result) and "not an omnivae run folder" in text(result)
    assert tree(folder) == before


def test_bad_config_leaves_a_run_folder_intact_on_overwrite(run_copy, tmp_path):
    before = tree(run_copy)
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["model"]["model"] = "nope"
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path, bad)), "--out", str(run_copy),
                                 "--overwrite"])
    assert result.exit_code == 2, result.output
    assert tree(run_copy) == before


@pytest.mark.parametrize("legacy", [False, True])
def test_a_run_folder_can_be_overwritten(run_copy, tmp_path, legacy):
    """A run folder (marked, or from before the marker existed) is replaced by --overwrite."""
    if legacy:
        (run_copy / "omnivae-run.json").unlink(missing_ok=True)
    (run_copy / "stale.txt").write_text("from the old run")
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["model"]["latent_dim"] = 3
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path, config)), "--out", str(run_copy),
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (run_copy / "stale.txt").exists()
    assert yaml.safe_load((run_copy / "run.yaml").read_text())["model"]["latent_dim"] == 3
    assert (run_copy / "omnivae-run.json").is_file()
    assert not list(tmp_path.glob(".run.*"))  # no leftover of the replaced folder


# -- 2. SIGTERM / SIGINT ----------------------------------------------------------------
def cli_process(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", "from omnivae.cli import app; app()", *args],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if proc.poll() is not None:
            raise AssertionError(f"the training process ended early ({proc.returncode}): {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s: {log.read_text()[-3000:]}")
        time.sleep(0.05)


def logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "logs" / "metrics.csv") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh) if row.get("step")]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_training_with_a_checkpoint_that_resume_continues(tmp_path, signum):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["train"].update(max_epochs=10_000, log_every_n_steps=1)
    out, log = tmp_path / "run", tmp_path / "train.log"
    proc = cli_process(["train", "--config", str(write_config(tmp_path, config)), "--out", str(out)], log)
    last = out / "checkpoints" / "last.ckpt"
    wait_for(last, proc, log)  # one epoch done
    time.sleep(0.4)  # and some steps of the next
    seen = read_checkpoint(last)["global_step"]
    proc.send_signal(signum)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the process ignored the signal: {log.read_text()[-3000:]}")
    output = " ".join(log.read_text().split())
    assert code == 128 + signum, output[-3000:]
    assert "interrupted" in output and "--resume" in output, output[-3000:]
    state = read_checkpoint(last)
    assert state["global_step"] >= seen > 0
    # model/ still holds the initial weights, marked so that loading them warns
    with pytest.warns(omnivae.io.UntrainedModelWarning):
        omnivae.load(out / "model")
    if signum != signal.SIGTERM:
        return
    saved = yaml.safe_load((out / "run.yaml").read_text())
    saved["train"]["max_epochs"] = state["epoch"] + 2
    (out / "run.yaml").write_text(yaml.safe_dump(saved))
    result = runner.invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    steps = logged_steps(out)
    assert steps and min(steps) >= state["global_step"] - 1, (steps[:5], state["global_step"])
    final = read_checkpoint(last)
    assert final["epoch"] == state["epoch"] + 1 and final["global_step"] > state["global_step"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", omnivae.io.UntrainedModelWarning)
        omnivae.load(out / "model")  # the finished run's weights: no warning


class SignalAt:
    """Callback sending `signum` to this process when training reaches `step` (in
    on_train_batch_start, i.e. in the middle of a step, as a real signal would land)."""

    def __new__(cls, step: int, signum: int = signal.SIGTERM, times: int = 1):
        from lightning.pytorch.callbacks import Callback

        class _Signal(Callback):
            def on_train_batch_start(self, trainer, *args):
                if trainer.global_step == step:
                    for _ in range(times):
                        os.kill(os.getpid(), signum)
        return _Signal()


def fit_tiny(run_dir: Path, make_raw, tiny_config, resume: bool = False, signal_at=None, **train):
    """fit() of a tiny model (same initial weights every call): 6 steps per epoch, 3 epochs."""
    from omnivae.data.tensors import TensorData
    from omnivae.models import build_model
    from omnivae.train import trainer as trainer_module
    from omnivae.train.config import TrainConfig

    raw = make_raw(n=48, seed=1, names=("image", "label"))
    torch.manual_seed(0)
    model = build_model(tiny_config("mvae", names=("image", "label")), raw)
    config = TrainConfig(**{"max_epochs": 3, "batch_size": 8, "progress": False, "tensorboard": False,
                            "patience": None, "num_threads": 1, "log_every_n_steps": 2, **train})
    original = trainer_module.make_trainer

    def with_signal(*args, **kwargs):
        trainer = original(*args, **kwargs)
        if signal_at is not None:
            trainer.callbacks.append(SignalAt(*signal_at))
        return trainer

    trainer_module.make_trainer = with_signal
    try:
        return trainer_module.fit(model, TensorData.from_raw(model, raw), None, config, run_dir, resume=resume)
    finally:
        trainer_module.make_trainer = original


@pytest.mark.parametrize("step, times, saved_step", [(8, 1, 9), (5, 1, 6), (8, 2, 6)])
def test_signal_then_resume_repeats_the_uninterrupted_run(tmp_path, make_raw, tiny_config, one_thread,
                                                          step, times, saved_step):
    """Mid-epoch the stop checkpoint is the step's own; in an epoch's last step it waits for the
    epoch end; a second signal stops at once (the last checkpoint written is kept). Each way,
    resuming gives the weights of the run that was never interrupted, and the handlers that
    were there before training are back afterwards."""
    from omnivae.train.callbacks import TrainingInterrupted

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    fit_tiny(tmp_path / "ref", make_raw, tiny_config)
    reference = read_checkpoint(tmp_path / "ref" / "checkpoints" / "last.ckpt")["state_dict"]
    with pytest.raises(TrainingInterrupted) as info:
        fit_tiny(tmp_path / "run", make_raw, tiny_config, signal_at=(step, signal.SIGTERM, times))
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert info.value.exit_code == 143
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert state["global_step"] == saved_step
    fit_tiny(tmp_path / "run", make_raw, tiny_config, resume=True)
    final = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 18
    diff = max(float((reference[k] - final["state_dict"][k]).abs().max()) for k in reference)
    assert diff <= 1e-6, diff


# -- 3. weights: NaN and checksum ---------------------------------------------------------
def test_nan_weights_are_refused_naming_the_tensor(trained_run, tmp_path):
    model = omnivae.load(trained_run / "model")
    name = next(k for k, v in model.state_dict().items() if v.is_floating_point() and "text" in k)
    with torch.no_grad():
        model.state_dict()[name].view(-1)[0] = float("nan")
    folder = tmp_path / "nan-model"
    omnivae.save(model, folder)
    with pytest.raises(ModelFileError, match=name.replace(".", r"\.")):
        omnivae.load(folder)
    result = runner.invoke(app, ["generate", "--model", str(folder), "--from", "text", "a red circle",
                                 "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "not finite" in text(result), result.output


def test_weights_checksum_is_recorded_and_verified(trained_run, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained_run / "model", folder)
    header = json.loads((folder / CONFIG_FILE).read_text())
    import hashlib
    assert header["weights_sha256"] == hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    blob = bytearray((folder / WEIGHTS_FILE).read_bytes())
    blob[-2] ^= 0x10  # one tensor value changes; the file still parses
    (folder / WEIGHTS_FILE).write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="changed or truncated"):
        omnivae.load(folder)
    # a folder from before checksums (no weights_sha256) still loads
    header.pop("weights_sha256")
    (folder / CONFIG_FILE).write_text(json.dumps(header))
    omnivae.load(folder)


# -- 4. resume with changes ------------------------------------------------------------------
def test_resume_with_more_epochs_trains_them(run_copy):
    first = read_checkpoint(run_copy / "checkpoints" / "last.ckpt")
    assert first["epoch"] == 0
    result = runner.invoke(app, ["train", "--resume", str(run_copy), "--set", "train.max_epochs=3"])
    assert result.exit_code == 0, result.output
    last = read_checkpoint(run_copy / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * first["global_step"]
    assert yaml.safe_load((run_copy / "run.yaml").read_text())["train"]["max_epochs"] == 3
    # resuming the finished run again trains nothing, and says so
    result = runner.invoke(app, ["train", "--resume", str(run_copy)])
    assert result.exit_code == 0, result.output
    assert "already finished" in text(result) and "trained mopoe" not in text(result)


def test_resume_refuses_unsafe_changes_by_name(run_copy, tmp_path):
    before = tree(run_copy)
    result = runner.invoke(app, ["train", "--resume", str(run_copy), "--set", "model.latent_dim=8"])
    assert result.exit_code == 2 and "model.latent_dim" in text(result), result.output
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["train"]["lr"] = 0.5
    result = runner.invoke(app, ["train", "--resume", str(run_copy), "--config", str(write_config(tmp_path, config))])
    assert result.exit_code == 2 and "train.lr" in text(result), result.output
    result = runner.invoke(app, ["train", "--resume", str(run_copy), "--out", str(tmp_path / "elsewhere")])
    assert result.exit_code == 2 and "--out" in text(result), result.output
    assert tree(run_copy) == before
    assert not (tmp_path / "elsewhere").exists()


# -- 5. impute and bench -----------------------------------------------------------------------
@pytest.fixture
def impute_inputs(tmp_path, make_raw, tiny_config):
    from omnivae.data.raw import RawData
    from omnivae.models import build_model
    from omnivae.tasks.impute import save

    raw = make_raw(12, names=("image", "label"))
    model = build_model(tiny_config("mvae", ("image", "label")), raw)
    omnivae.save(model, tmp_path / "model")
    mask = {"image": np.ones(12, bool), "label": np.arange(12) % 3 != 0}
    data = save(RawData(raw.modalities, raw.kinds, mask), tmp_path / "partial.npz")
    return tmp_path / "model", data


def test_impute_refuses_to_overwrite_its_input(impute_inputs, tmp_path):
    model, data = impute_inputs
    before = data.read_bytes()
    same = tmp_path / "." / data.name
    result = runner.invoke(app, ["impute", "--model", str(model), "--data", str(data), "--out", str(same)])
    assert result.exit_code == 2 and "--force" in text(result), result.output
    assert data.read_bytes() == before
    result = runner.invoke(app, ["impute", "--model", str(model), "--data", str(data), "--out", str(data), "--force"])
    assert result.exit_code == 0, result.output
    with np.load(data) as npz:
        assert npz["mask__label"].all() and npz["imputed__label"].sum() == 4


def test_impute_output_is_written_atomically(impute_inputs, tmp_path, monkeypatch):
    from omnivae.tasks import impute as impute_module

    model, data = impute_inputs
    out = tmp_path / "completed.npz"
    out.write_bytes(b"old result")

    def broken(fh, **arrays):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(impute_module.np, "savez", broken)
    result = runner.invoke(app, ["impute", "--model", str(model), "--data", str(data), "--out", str(out)])
    assert result.exit_code != 0
    assert out.read_bytes() == b"old result"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".completed")] == []


FAKE_RUN_ALL = '''
import argparse, json, os
from pathlib import Path
HERE = Path(__file__).resolve().parent

def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", action="append")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "mopoe_vs_m.png")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "mnist-label.json").write_text(json.dumps(
        {"workload": "mnist-label", "quick": a.quick, "mnist_dir": os.environ.get("OMNIVAE_MNIST_DIR")}))
    (a.out / "table.md").write_text("quick table" if a.quick else "full table")
    a.figure.parent.mkdir(parents=True, exist_ok=True)
    a.figure.write_text("quick figure" if a.quick else "full figure")
    return 0
'''


def test_bench_quick_keeps_the_committed_results_and_finds_mnist_in_the_cache(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    bench = repo / "benchmarks"
    (bench / "results").mkdir(parents=True)
    (repo / "docs").mkdir()
    (bench / "run_all.py").write_text(FAKE_RUN_ALL)
    committed = {bench / "results" / "mnist-label.json": '{"workload": "mnist-label", "quick": false}',
                 bench / "results" / "table.md": "committed table", repo / "docs" / "mopoe_vs_m.png": "committed"}
    for path, content in committed.items():
        path.write_text(content)
    cache = tmp_path / "data"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"stand-in")
    monkeypatch.setenv("OMNIVAE_BENCHMARKS_DIR", str(bench))
    monkeypatch.setenv("OMNIVAE_DATA_DIR", str(cache))
    monkeypatch.delenv("OMNIVAE_MNIST_DIR", raising=False)
    result = runner.invoke(app, ["bench", "--quick"])
    assert result.exit_code == 0, result.output
    for path, content in committed.items():
        assert path.read_text() == content, path
    quick = json.loads((bench / "results" / "mnist-label_quick.json").read_text())
    assert quick["quick"] is True
    assert Path(quick["mnist_dir"]) == cache / "mnist"
    assert (bench / "results" / "table_quick.md").read_text() == "quick table"
    assert "OMNIVAE_MNIST_DIR" not in os.environ  # the command leaves the environment as it found it


# -- 6. generate: unknown words and the sample count -------------------------------------------
def test_unknown_caption_words_warn(trained_run, tmp_path):
    from omnivae.tasks.generate import UnknownWordsWarning, generate_from_inputs

    with pytest.warns(UnknownWordsWarning, match="purple.*elephant"):
        generate_from_inputs(trained_run / "model", "text", ["a purple elephant"], ["image"], 1, tmp_path / "g1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownWordsWarning)
        generate_from_inputs(trained_run / "model", "text", ["a red circle"], ["image"], 1, tmp_path / "g2")
    result = runner.invoke(app, ["generate", "--model", str(trained_run / "model"), "--from", "text",
                                 "a purple elephant", "--to", "image", "--out", str(tmp_path / "g3")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "unknown" in line]
    assert len(lines) == 1 and "purple" in lines[0] and "elephant" in lines[0], result.stderr


@pytest.mark.parametrize("n", ["10001", "1000000000", "0"])  # 10001 first: today it runs (exit 0) instead of
def test_generate_sample_count_is_bounded(trained_run, tmp_path, n):  # trying to allocate 64 GB
    result = runner.invoke(app, ["generate", "--model", str(trained_run / "model"), "--from", "text",
                                 "a red circle", "--n", n, "--out", str(tmp_path / "g")])
    assert result.exit_code == 2, result.output
    assert "10,000" in text(result) and "--n" in text(result)
    assert not (tmp_path / "g").exists()


# -- limits that were accepted and then ran (or crashed) -------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["demo", "--minutes", "-1"], "--minutes"),
    (["demo", "--seed", str(2**64)], "--seed"),
    (["train", "--data", "shapes", "--set", "train.max_epochs=-1"], "max_epochs"),
    (["train", "--data", "shapes", "--set", "train.seed=-1"], "seed"),
    (["train", "--data", "shapes", "--set", "train.max_steps=0"], "max_steps"),
])
def test_limits_are_refused_before_anything_runs(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(omnivae.run, "load_source", lambda config: pytest.fail("data were loaded"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not any(tmp_path.iterdir())


def test_an_unknown_model_is_refused_before_the_data_are_made(tmp_path, monkeypatch):
    monkeypatch.setattr(omnivae.run, "load_source", lambda config: pytest.fail("data were made first"))
    result = runner.invoke(app, ["demo", "--model", "mopo", "--out", str(tmp_path / "d"), "--n", "1000000"])
    assert result.exit_code == 2 and "did you mean 'mopoe'" in " ".join(result.output.split())
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("verb, own", [("generate", "outputs.json"), ("evaluate", "metrics.json")])
def test_outputs_never_mix_with_unrelated_files(tmp_path, verb, own):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.html").write_text("my own report")
    args = {"generate": ["generate", "--model", str(tmp_path / "missing-model"), "--out", str(folder)],
            "evaluate": ["evaluate", "--model", str(tmp_path / "missing-model"), "--data", "shapes",
                         "--out", str(folder)]}[verb]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "already holds other files" in " ".join(result.output.split())
    assert sorted(p.name for p in folder.iterdir()) == ["report.html"]
    assert (folder / "report.html").read_text() == "my own report"
    (folder / own).write_text("{}")  # a folder this verb wrote before may be written again
    result = runner.invoke(app, args)
    assert "already holds other files" not in result.output
