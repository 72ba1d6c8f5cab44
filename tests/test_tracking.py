"""Experiment tracking through Lightning's loggers (train.loggers): MLflow read back with MLflow's
own client, W&B offline run files, the default csv + tensorboard, and clear errors."""
from __future__ import annotations

import math
import sys

import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

import omnivae.run
from omnivae import ConfigError
from omnivae.run import train_run
from omnivae.train.config import TrainConfig
from omnivae.train.loggers import build_loggers, logger_names, mlflow_tracking_uri
from omnivae.train.trainer import make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"max_epochs": 1, "batch_size": 16, "progress": False, "log_every_n_steps": 1, "patience": None,
         "num_threads": 1}
MODEL = {"model": "mvae", "latent_dim": 4,
         "modalities": {"image": {"arch": "mlp", "hidden": [16]}, "label": {"hidden": [8]}}}


def run_config(**train):
    return {"data": {"source": "tiny", "test_fraction": 0.1}, "model": MODEL, "train": {**TRAIN, **train}}


@pytest.fixture
def tiny_source(monkeypatch, make_raw):
    raw = make_raw(48)
    monkeypatch.setattr(omnivae.run, "load_source", lambda config: raw)
    return raw


@pytest.fixture
def clean_tracking_env(monkeypatch, tmp_path):
    """No tracking settings from outside; W&B keeps its settings and caches in tmp_path. Variables
    the loggers set (MLFLOW_ALLOW_FILE_STORE) are removed again afterwards."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.setenv(name, "x")  # recorded, so the teardown restores the variable's absence
        monkeypatch.delenv(name)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_mlflow_run_reads_back_with_mlflows_client(tmp_path, tiny_source, clean_tracking_env):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient

    run_dir = tmp_path / "run"
    train_run(run_config(loggers=["csv", "mlflow"], experiment="tiny-exp"), run_dir)
    store = run_dir / "mlruns"
    assert store.is_dir()  # the default: a file store inside the run folder
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tiny-exp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model/model"] == "mvae"  # the run config, flattened
    assert run.data.params["train/max_epochs"] == "1"
    assert run.data.params["model/modalities/image/shape"] == "[1, 8, 8]"  # resolved from the data
    history = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert len(history) >= 1 and all(math.isfinite(m.value) for m in history)
    assert client.get_metric_history(run.info.run_id, "val/loss")
    # the CSV logger ran beside it and got the same hyperparameters
    assert (run_dir / "logs" / "metrics.csv").is_file()
    hparams = yaml.safe_load((run_dir / "logs" / "hparams.yaml").read_text())
    assert hparams["model"]["model"] == "mvae"
    assert not list((run_dir / "logs").glob("events.out.tfevents.*"))  # tensorboard was not listed


def test_wandb_offline_run_files(tmp_path, tiny_source, clean_tracking_env):
    wandb = pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    train_run(run_config(loggers=["wandb"]), run_dir)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1
    data = records[0].read_bytes()
    assert data.startswith(b":W&B")  # W&B's transaction log, what `wandb sync` uploads
    assert b"train/loss_step" in data and b"mvae" in data  # metrics and the run config are in it
    assert (runs[0] / "files").is_dir()
    assert wandb.run is None  # the run was finished when training ended
    assert not (run_dir / "logs" / "metrics.csv").exists()  # csv was not listed


def test_default_loggers_are_csv_and_tensorboard(tmp_path):
    trainer = make_trainer(TrainConfig(progress=False), tmp_path, has_val=False)
    assert [type(lg) for lg in trainer.loggers] == [CSVLogger, TensorBoardLogger]
    trainer = make_trainer(TrainConfig(progress=False, tensorboard=False), tmp_path, has_val=False)
    assert [type(lg) for lg in trainer.loggers] == [CSVLogger]


def test_logger_names():
    assert logger_names(TrainConfig()) == ["csv", "tensorboard"]
    assert logger_names(TrainConfig(tensorboard=False)) == ["csv"]
    assert logger_names(TrainConfig(loggers=["mlflow", "tensorboard", "mlflow"], tensorboard=False)) == ["mlflow"]
    assert logger_names(TrainConfig(loggers=["wandb", "csv", "wandb"])) == ["wandb", "csv"]
    assert logger_names(TrainConfig(loggers=[])) == []


def test_tracking_options_build_lightnings_loggers(tmp_path, clean_tracking_env, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    store = (tmp_path / "elsewhere").as_uri()
    config = TrainConfig(loggers=["mlflow", "wandb"], mlflow_uri=store, experiment="exp")
    mlflow_logger, wandb_logger = build_loggers(config, tmp_path / "run")
    assert isinstance(mlflow_logger, MLFlowLogger) and isinstance(wandb_logger, WandbLogger)
    assert mlflow_logger._tracking_uri == store and mlflow_logger._experiment_name == "exp"
    assert wandb_logger._wandb_init["mode"] == "offline" and wandb_logger._project == "exp"
    assert wandb_logger.save_dir == str(tmp_path / "run")
    # the environment's tracking server when no train.mlflow_uri is given; W&B mode from WANDB_MODE
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert mlflow_tracking_uri(TrainConfig(), tmp_path / "run") == store
    assert build_loggers(config, tmp_path / "run")[1]._wandb_init["mode"] == "disabled"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert mlflow_tracking_uri(TrainConfig(), tmp_path / "run") == (tmp_path / "run" / "mlruns").as_uri()


@pytest.mark.parametrize("name", ["mlfow", "MLflow", "comet"])
def test_unknown_logger_is_a_clear_config_error(name, tmp_path, tiny_source):
    with pytest.raises(ConfigError, match=rf"loggers: .*unknown logger '{name}'; "
                                          r"allowed: csv, tensorboard, mlflow, wandb"):
        TrainConfig.from_dict({"loggers": ["csv", name]}, "train")
    with pytest.raises(ConfigError, match=rf"train\.loggers: .*unknown logger '{name}'"):
        train_run(run_config(loggers=[name]), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_missing_tracking_package_says_what_to_install(package, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed: import fails
    with pytest.raises(ConfigError, match=r"pip install 'omnivae\[tracking\]'"):
        build_loggers(TrainConfig(loggers=["csv", package]), tmp_path)


def test_unusable_mlflow_uri_is_a_config_error(tmp_path, clean_tracking_env):
    pytest.importorskip("mlflow")
    with pytest.raises(ConfigError, match="train.mlflow_uri"):
        build_loggers(TrainConfig(loggers=["mlflow"], mlflow_uri="nosuchscheme://x"), tmp_path)
