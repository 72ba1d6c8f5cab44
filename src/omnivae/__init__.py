"""omnivae: multimodal autoencoders and variational autoencoders in PyTorch.

The names below are imported on first use (PEP 562), so `import omnivae` and the `omnivae`
command start without loading torch until a verb needs it."""
from importlib import import_module

from omnivae.errors import ConfigError, InputError, ModelFileError, OmniVAEError, TrainingError
from omnivae.version import __version__

_LAZY = {"Batch": ("omnivae.batch", "Batch"), "LossOutput": ("omnivae.batch", "LossOutput"),
         "RawData": ("omnivae.data.raw", "RawData"), "load": ("omnivae.io", "load_model"),
         "save": ("omnivae.io", "save_model"), "MODELS": ("omnivae.models", "MODELS"),
         "build_model": ("omnivae.models", "build_model")}

__all__ = ["Batch", "LossOutput", "RawData", "OmniVAEError", "InputError", "ConfigError",
           "ModelFileError", "TrainingError", "load", "save", "build_model", "MODELS", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'omnivae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
