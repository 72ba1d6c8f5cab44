"""omnivae: multimodal autoencoders and variational autoencoders in PyTorch."""
from omnivae.batch import Batch, LossOutput
from omnivae.data.raw import RawData
from omnivae.errors import ConfigError, InputError, ModelFileError, OmniVAEError, TrainingError
from omnivae.io import load_model as load
from omnivae.io import save_model as save
from omnivae.models import MODELS, build_model
from omnivae.version import __version__

__all__ = ["Batch", "LossOutput", "RawData", "OmniVAEError", "InputError", "ConfigError",
           "ModelFileError", "TrainingError", "load", "save", "build_model", "MODELS", "__version__"]
