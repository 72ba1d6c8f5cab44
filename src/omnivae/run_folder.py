"""The run folder's layout, in one place: other modules ask a RunFolder for its paths and files.

RUN/omnivae-run.json  the marker, written first: only folders that hold it (or an omnivae model/,
                      for runs from before the marker) are ever replaced; its "training" entry
                      is the record of wall time, epochs, steps and split sizes
RUN/run.yaml          the resolved run config, written after the first model/
RUN/model/            the saved model (omnivae.io)
RUN/checkpoints/      best.ckpt, last.ckpt and previous.ckpt (omnivae.train.checkpoint)
RUN/logs/             metrics.csv, metrics.part-NNN.csv of earlier attempts, TensorBoard files
RUN/scorers/          evaluation classifiers (safetensors + JSON), keyed by what they learned from,
                      so evaluating the run again reuses them
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from omnivae.atomic import remove_temporary_files
from omnivae.atomic import write_bytes as atomic_write_bytes
from omnivae.errors import ConfigError
from omnivae.version import __version__

MARKER, CONFIG, MODEL, CHECKPOINTS, LOGS = "omnivae-run.json", "run.yaml", "model", "checkpoints", "logs"
SCORERS = "scorers"
BEST, LAST, PREVIOUS = "best.ckpt", "last.ckpt", "previous.ckpt"
METRICS = "metrics.csv"  # Lightning's CSVLogger writes RUN/logs/metrics.csv


class RunFolder:
    """One run folder: its paths, whether it is a run, its saved config and its marker."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------------------- paths
    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST

    @property
    def previous_checkpoint(self) -> Path:
        return self.checkpoints / PREVIOUS

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def scorers(self) -> Path:
        """Where evaluation keeps its trained classifiers."""
        return self.path / SCORERS

    @property
    def metrics_csv(self) -> Path:
        """The current attempt's CSV log."""
        return self.logs / METRICS

    def resume_candidates(self) -> list[Path]:
        """The checkpoints to resume from, in the order to try them: last, previous, then the
        best ones (best*.ckpt) newest first; only files that exist."""
        best = sorted(self.checkpoints.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [p for p in (self.last_checkpoint, self.previous_checkpoint, *best) if p.is_file()]

    def metrics_files(self) -> list[Path]:
        """The run's CSV metrics in order: earlier attempts first, then the current one."""
        parts = sorted(self.logs.glob("metrics.part-*.csv"))
        return parts + ([self.metrics_csv] if self.metrics_csv.is_file() else [])

    def keep_previous_metrics(self) -> None:
        """Lightning's CSV logger would delete metrics.csv on resume: move it to metrics.part-NNN.csv."""
        current = self.metrics_csv
        if current.is_file():
            n = len(list(self.logs.glob("metrics.part-*.csv")))
            current.rename(current.with_name(f"metrics.part-{n:03d}.csv"))

    # ------------------------------------------------------------------------- what it is
    def is_run(self) -> bool:
        """True for a folder an omnivae run wrote: it holds the marker (written first by every
        run since the marker exists) or, for older runs, an omnivae model folder model/config.json
        (written before anything else but the marker; also as .model.old-* after a killed save)."""
        from omnivae.io import CONFIG_FILE, FORMAT

        if self.marker.is_file():
            return True
        for header in [self.model / CONFIG_FILE, *self.path.glob(f".{MODEL}.old-*/{CONFIG_FILE}")]:
            try:
                if header.is_file() and json.loads(header.read_text(encoding="utf-8")).get("format") == FORMAT:
                    return True
            except (OSError, ValueError, AttributeError):
                continue
        return False

    def has_config(self) -> bool:
        """The run's config is saved (it is written after the first model/, so model/ is there too)."""
        return self.config_file.is_file()

    # ----------------------------------------------------------------------- the config
    def read_config(self) -> dict[str, Any]:
        """The saved run config; ConfigError if it is missing, not YAML or not a mapping."""
        path = self.config_file
        if not path.is_file():
            raise ConfigError(f"{self.path} is not a run folder: {CONFIG} is missing")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
        return data

    def saved_config(self) -> dict[str, Any] | None:
        """The saved run config, or None when it is missing or unreadable (for reports)."""
        try:
            data = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_bytes(self.config_file, yaml.safe_dump(config, sort_keys=False).encode())

    # ----------------------------------------------------------------------- the marker
    def read_marker(self) -> dict[str, Any]:
        """The marker's content; {} when it is missing or unreadable."""
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_marker(self, marker: dict[str, Any]) -> None:
        atomic_write_bytes(self.marker, (json.dumps(marker, indent=2) + "\n").encode())

    def training_record(self) -> dict[str, Any]:
        """The marker's "training" entry (wall_seconds, epochs, steps, finished, examples); {} if none."""
        record = self.read_marker().get("training")
        return dict(record) if isinstance(record, dict) else {}

    def write_training_record(self, record: dict[str, Any]) -> None:
        self.write_marker({**self.read_marker(), "training": record})

    # --------------------------------------------------------------- starting and resuming
    def check_new(self, overwrite: bool) -> None:
        """Refuse, before anything is touched, a --out that is a file, a non-empty folder without
        --overwrite, or (with --overwrite) a non-empty folder that is not an omnivae run folder."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"run folder {path} exists and is a file, not a folder; choose another --out")
        if not path.is_dir() or not any(path.iterdir()):
            return
        if not self.is_run():
            raise ConfigError(f"folder {path} already exists and is not an omnivae run folder (it has no "
                              f"{MARKER} and no {MODEL}/ written by omnivae), so it is left as it is, even with "
                              "--overwrite: choose another --out, or empty the folder yourself")
        if not overwrite:
            raise ConfigError(f"run folder {path} already exists and is not empty; pass --resume to "
                              "continue it, --overwrite to replace it, or choose another --out")

    def check_resumable(self) -> None:
        if not self.has_config():
            raise ConfigError(f"cannot resume: {self.path} holds no {CONFIG} (not a run folder, or its run was "
                              "killed while starting: train it again with --overwrite)")

    def create(self, overwrite: bool) -> None:
        """Start a new run here: check (check_new), take an old run away, write the marker."""
        path = self.path
        self.check_new(overwrite)
        for leftover in path.parent.glob(f".{path.name}.replaced-*"):  # a replace killed while deleting
            shutil.rmtree(leftover, ignore_errors=True)
        if path.is_dir() and any(path.iterdir()):
            # one rename takes the old run away whole (a kill cannot leave half a run that is no
            # longer recognisable as one), then it is deleted
            trash = path.with_name(f".{path.name}.replaced-{os.getpid()}-{time.time_ns()}")
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        self.write_marker({"format": "omnivae-run", "omnivae_version": __version__,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def tidy(self) -> None:
        """Before resuming: put back a model folder whose save was killed mid-swap, then drop the
        temporary files and folders that killed writes left."""
        from omnivae.io import recover_model_folder

        recover_model_folder(self.model)
        for tmp in self.path.glob(f".{MODEL}.*"):
            shutil.rmtree(tmp, ignore_errors=True)
        remove_temporary_files(self.path, CONFIG)

    def remove_temporary_checkpoints(self) -> None:
        """Temporary files of checkpoint writes that a crash interrupted (the real files are intact)."""
        remove_temporary_files(self.checkpoints)
