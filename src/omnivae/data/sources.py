"""Data sources by name, for configs and the CLI: each returns a RawData."""
from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any, Callable

from pydantic import model_validator

from omnivae.config import PositiveInt, StrictModel
from omnivae.data.raw import RawData
from omnivae.errors import ConfigError, did_you_mean

# name -> "module:function"; imported on use so optional sources cost nothing
SOURCES: dict[str, str] = {
    "shapes": "omnivae.data.shapes:make_shapes",
    "mnist": "omnivae.data.mnist:load_mnist",
    "polymnist": "omnivae.data.polymnist:load_polymnist",
    "folder": "omnivae.data.folder:load_folder",
    "coco": "omnivae.data.coco:load_coco",
    "arrays": "omnivae.data.arrays:load_arrays",
}
STREAMABLE = ("folder",)  # sources data.stream can read lazily (omnivae.data.lazy.LazyImageFolder)


class DataConfig(StrictModel):
    source: str = "shapes"
    options: dict[str, Any] = {}  # keyword arguments of the source function
    test_fraction: float = 0.1  # held out for evaluation, after the validation split
    split_seed: int = 0
    # semi-supervised: keep this many labels of the training split (balanced over the classes, seeded
    # by split_seed) and mark the others missing (omnivae.data.labelled); None keeps every label
    labelled: PositiveInt | None = None
    labelled_modality: str | None = None  # the categorical modality `labelled` thins out; default: the only one
    # a folder larger than memory: `train` reads images from disk in DataLoader workers (train.num_workers)
    # instead of loading them all (omnivae.data.lazy); the model is fitted on stream_sample training rows
    stream: bool = False
    stream_sample: PositiveInt = 2000

    @model_validator(mode="after")
    def _streamable(self) -> "DataConfig":
        if self.stream and self.source not in STREAMABLE:
            raise ValueError(f"stream: true needs the source {' or '.join(STREAMABLE)}, not {self.source!r} "
                             "(other sources are read into memory)")
        if self.stream and self.labelled is not None:
            raise ValueError("stream: true cannot be combined with labelled (thinning labels needs the whole "
                             "training split in memory)")
        return self


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
