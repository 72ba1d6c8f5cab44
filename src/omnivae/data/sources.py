"""Data sources by name, for configs and the CLI: each returns a RawData."""
from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any, Callable

from omnivae.config import StrictModel
from omnivae.data.raw import RawData
from omnivae.errors import ConfigError, did_you_mean

# name -> "module:function"; imported on use so optional sources cost nothing
SOURCES: dict[str, str] = {
    "shapes": "omnivae.data.shapes:make_shapes",
    "mnist": "omnivae.data.mnist:load_mnist",
    "polymnist": "omnivae.data.polymnist:load_polymnist",
    "folder": "omnivae.data.folder:load_folder",
    "arrays": "omnivae.data.arrays:load_arrays",
}


class DataConfig(StrictModel):
    source: str = "shapes"
    options: dict[str, Any] = {}  # keyword arguments of the source function
    test_fraction: float = 0.1  # held out for evaluation, after the validation split
    split_seed: int = 0


def source_function(name: str) -> Callable[..., RawData]:
    if name not in SOURCES:
        raise ConfigError(f"unknown data source {name!r}{did_you_mean(name, SOURCES)}; known sources: {sorted(SOURCES)}")
    module, func = SOURCES[name].split(":")
    try:
        return getattr(import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"data source {name!r} is not available: {exc}") from None


def load_source(config: DataConfig) -> RawData:
    fn = source_function(config.source)
    try:
        inspect.signature(fn).bind(**config.options)
    except TypeError as exc:
        raise ConfigError(f"data source {config.source!r}: {exc}; it takes {inspect.signature(fn)}") from None
    return fn(**config.options)
