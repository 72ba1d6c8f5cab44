"""Save and load models as a folder: config.json + model.safetensors + tokenizer JSON.

Loading reads JSON and safetensors only: nothing is unpickled and no code runs. A folder
holding files of any other type (a pickle, a .pt) is refused.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from omnivae.errors import ConfigError, InputError, ModelFileError
from omnivae.version import __version__

CONFIG_FILE, WEIGHTS_FILE, FORMAT = "config.json", "model.safetensors", "omnivae-model"
ALLOWED_SUFFIXES = {".json", ".safetensors", ".md", ".txt", ".png", ".html", ".yaml", ".csv"}


def save_model(model, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the model folder atomically: build it beside the target, then swap it in."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        header = {"format": FORMAT, "omnivae_version": __version__, "config": model.config.to_dict()}
        if extra:
            header["extra"] = extra
        (tmp / CONFIG_FILE).write_text(json.dumps(header, indent=2), encoding="utf-8")
        for mod in model.modalities.values():
            for name, text in mod.extra_files().items():
                (tmp / name).write_text(text, encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"omnivae_version": __version__})
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_header(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelFileError(f"{folder} is not a model folder: {CONFIG_FILE} is missing")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON (truncated or damaged?): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("config"), dict):
        raise ModelFileError(f"{path} is not an omnivae model config (no format={FORMAT!r})")
    check_version(str(header.get("omnivae_version", "")), path)
    return header


def check_version(saved: str, path: Path) -> None:
    """Same major version (and, before 1.0, same minor) loads; anything else is refused."""
    def parts(v):
        try:
            numbers = tuple(int(p) for p in v.split(".")[:2])
        except ValueError:
            numbers = ()
        if len(numbers) != 2:
            raise ModelFileError(f"{path}: missing or unreadable omnivae_version {v!r}")
        return numbers
    s, c = parts(saved), parts(__version__)
    if s[0] != c[0] or (c[0] == 0 and s[1] != c[1]) or s > c:
        raise ModelFileError(f"{path} was saved by omnivae {saved}; this is omnivae {__version__}, "
                             "which cannot read it")


def check_folder_contents(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix.lower() not in ALLOWED_SUFFIXES:
            raise ModelFileError(f"refusing to load {folder}: it holds {path.name!r}, a file type a model "
                                 f"folder never has (allowed: {sorted(ALLOWED_SUFFIXES)}); pickles and "
                                 ".pt files are never loaded")


def load_model(folder: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild a model from its folder: JSON config, JSON tokenizers, safetensors weights."""
    from omnivae.models import build_model

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"model folder {folder} does not exist")
    check_folder_contents(folder)
    header = read_header(folder)
    try:
        model = build_model(header["config"])
    except (ConfigError, InputError) as exc:
        raise ModelFileError(f"{folder / CONFIG_FILE}: {exc}") from None
    for mod in model.modalities.values():
        mod.load_extra_files(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights} cannot be read (truncated or damaged?): {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {list(state[k].shape)} vs config {list(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ModelFileError(f"{weights} does not match {CONFIG_FILE}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    model.load_state_dict(state)
    return model.eval()
