"""Save and load models as a folder: config.json + model.safetensors + tokenizer JSON.

Loading reads JSON and safetensors only: nothing is unpickled and no code runs. A folder
holding files of any other type (a pickle, a .pt) is refused.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from omnivae.atomic import replacing_folder, restore_folder
from omnivae.errors import ConfigError, InputError, ModelFileError
from omnivae.version import __version__

CONFIG_FILE, WEIGHTS_FILE, FORMAT = "config.json", "model.safetensors", "omnivae-model"
ALLOWED_SUFFIXES = {".json", ".safetensors", ".md", ".txt", ".png", ".html", ".yaml", ".csv"}
CHECKSUM_KEY = "weights_sha256"  # config.json: SHA-256 of model.safetensors, checked on load (absent in old folders)


class UntrainedModelWarning(UserWarning):
    """The folder holds the initial weights of a run whose training has not finished."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the model folder atomically: build it beside the target, then swap it in (a crash
    between the two renames leaves .NAME.old-PID, which load_model puts back)."""
    folder = Path(folder)
    with replacing_folder(folder) as tmp:
        for mod in model.modalities.values():
            for name, text in mod.extra_files().items():
                (tmp / name).write_text(text, encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"omnivae_version": __version__})
        header = {"format": FORMAT, "omnivae_version": __version__, "config": model.config.to_dict(),
                  CHECKSUM_KEY: file_sha256(tmp / WEIGHTS_FILE)}  # weights first: the header vouches for them
        if extra:
            header["extra"] = extra
        (tmp / CONFIG_FILE).write_text(json.dumps(header, indent=2), encoding="utf-8")
    return folder


def recover_model_folder(folder: Path) -> None:
    """A save killed between its two renames leaves no folder, only the previous one as
    .NAME.old-PID (complete: it was moved whole): move the newest such folder back."""
    restore_folder(folder, lambda p: (p / CONFIG_FILE).is_file())


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


def read_shapes(weights: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from the safetensors header; no tensor data is read."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights} cannot be read (truncated or damaged?): {exc}") from None


def check_shapes(model, shapes: dict[str, list[int]], weights: Path) -> None:
    """Refuse weights that do not fit the config, naming the tensors, before any are loaded."""
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k}: file {shapes[k]} vs config {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
    if missing or unexpected or wrong:
        raise ModelFileError(f"{weights} does not match {CONFIG_FILE}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")


def check_checksum(header: dict, weights: Path) -> None:
    """The weights file must be the one the header was written with (folders saved before
    checksums have no CHECKSUM_KEY and are not checked)."""
    expected = header.get(CHECKSUM_KEY)
    if expected is None:
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise ModelFileError(f"{weights.parent / CONFIG_FILE}: {CHECKSUM_KEY} must be a SHA-256 hex digest, "
                             f"got {expected!r}")
    if file_sha256(weights) != expected.lower():
        raise ModelFileError(f"{weights} does not match the SHA-256 recorded in {CONFIG_FILE}: the weights file "
                             "was changed or truncated after it was saved (restore the folder from a copy, or "
                             "save the model again)")


def check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse weights holding NaN or inf, naming the first such tensor."""
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ModelFileError(f"{weights}: tensor {name!r} holds {bad} of {tensor.numel()} values that are "
                                     "not finite (NaN or inf): the model cannot give meaningful outputs (its "
                                     "training diverged, or the file was damaged)")


def warn_if_untrained(header: dict, folder: Path) -> None:
    if isinstance(header.get("extra"), dict) and header["extra"].get("trained") is False:
        warnings.warn(f"{folder} holds the initial, untrained weights of a run that has not finished training "
                      "(it was interrupted or is still running): resume it with `omnivae train --resume RUN_DIR` "
                      "before using it", UntrainedModelWarning, stacklevel=3)


def build_from_header(header: dict, folder: Path):
    """The model a header describes; a config that cannot be built is the folder's fault."""
    from omnivae.models import build_model

    try:
        return build_model(header["config"])
    except (ConfigError, InputError) as exc:
        raise ModelFileError(f"{folder / CONFIG_FILE}: {exc}") from None


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Initialisers (torch.nn.init.*) do nothing: on the meta device there is nothing to fill,
    and their meta implementations import the compiler stack (about a second)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


def load_model(folder: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild a model from its folder: JSON config, JSON tokenizers, safetensors weights.
    "hf://user/repo[@revision]" downloads the folder from the Hugging Face Hub first (omnivae.hub)."""
    if isinstance(folder, str) and folder.startswith("hf://"):
        from omnivae.hub import pull_uri

        folder = pull_uri(folder)  # JSON, safetensors and the like only; checked again below
    folder = Path(folder)
    recover_model_folder(folder)
    if not folder.is_dir():
        raise ModelFileError(f"model folder {folder} does not exist")
    check_folder_contents(folder)
    header = read_header(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{folder}: {WEIGHTS_FILE} is missing")
    shapes = read_shapes(weights)
    try:  # on the meta device sizes cost nothing: an oversized config is refused before any allocation
        with torch.device("meta"), _SkipInit():
            check_shapes(build_from_header(header, folder), shapes, weights)
    except ModelFileError:
        raise
    except Exception:  # a config that cannot be built on meta fails the same way below (or is checked there)
        pass
    model = build_from_header(header, folder)
    for mod in model.modalities.values():
        mod.load_extra_files(folder)
    check_shapes(model, shapes, weights)
    check_checksum(header, weights)
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights} cannot be read (truncated or damaged?): {exc}") from None
    check_finite(state, weights)
    model.load_state_dict(state)
    warn_if_untrained(header, folder)
    return model.eval()
