"""Model families by name."""
from __future__ import annotations

from typing import Any

from omnivae.errors import ConfigError, did_you_mean
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.models.mmvae import MMVAE, MMVAEConfig
from omnivae.models.mopoe import MoPoE, MoPoEConfig
from omnivae.models.mvae import MVAE, MVAEConfig
from omnivae.models.registry import MODELS, register_model
from omnivae.models.vae import VAE, VAEConfig

for _name, _cls in {"vae": VAE, "mvae": MVAE, "mmvae": MMVAE, "mopoe": MoPoE}.items():
    register_model(_name, _cls)

# families that register themselves when imported
from omnivae.models.ae import AE, DAE, AEConfig, DAEConfig, SparseAE, SparseAEConfig  # noqa: E402
from omnivae.models.iwae import IWAE, IWAEConfig  # noqa: E402
from omnivae.models.multimodal_ae import MultimodalAE, MultimodalAEConfig  # noqa: E402
from omnivae.models.stacked import StackedAE, StackedAEConfig  # noqa: E402
from omnivae.models.jmvae import JMVAE, JMVAEConfig  # noqa: E402
from omnivae.models.mvtcae import MVTCAE, MVTCAEConfig  # noqa: E402
from omnivae.models.mmvae_plus import MMVAEPlus, MMVAEPlusConfig  # noqa: E402
from omnivae.models.cvae import CVAE, CVAEConfig  # noqa: E402
from omnivae.models.jnf import JNF, JNFConfig  # noqa: E402
from omnivae.models.nexus import Nexus, NexusConfig  # noqa: E402
from omnivae.models.mhvae import MHVAE, MHVAEConfig  # noqa: E402
from omnivae.models.dmvae import DMVAE, DMVAEConfig  # noqa: E402
from omnivae.models.telbo import TELBO, TELBOConfig  # noqa: E402
from omnivae.models.crmvae import CRMVAE, CRMVAEConfig  # noqa: E402
from omnivae.models.cmvae import CMVAE, CMVAEConfig  # noqa: E402
from omnivae.models.m2 import M2, M2Config  # noqa: E402
from omnivae.models.ladder import LadderVAE, LadderVAEConfig  # noqa: E402


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Pick the config class from the 'model' key and validate strictly."""
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"model config needs a 'model' key naming one of {sorted(MODELS)}")
    name = data["model"]
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; known models: {sorted(MODELS)}")
    return MODELS[name].config_class.from_dict(data, where=f"{name} model config")


def build_model(config: ModelConfig | dict, raw=None) -> MultimodalModel:
    """A model from its config; with training data `raw`, preprocessing is fitted too."""
    if isinstance(config, dict):
        config = model_config_from_dict(config)
    cls = MODELS[config.model]
    return cls.from_data(config, raw) if raw is not None else cls(config)


__all__ = ["MODELS", "register_model", "model_config_from_dict", "build_model", "ModelConfig",
           "MultimodalModel", "VAE", "VAEConfig", "MVAE", "MVAEConfig", "MMVAE", "MMVAEConfig",
           "MoPoE", "MoPoEConfig", "AE", "AEConfig", "DAE", "DAEConfig", "SparseAE", "SparseAEConfig",
           "StackedAE", "StackedAEConfig", "IWAE", "IWAEConfig", "MultimodalAE", "MultimodalAEConfig",
           "JMVAE", "JMVAEConfig", "MVTCAE", "MVTCAEConfig", "MMVAEPlus", "MMVAEPlusConfig", "CVAE", "CVAEConfig",
           "JNF", "JNFConfig", "Nexus", "NexusConfig", "MHVAE", "MHVAEConfig",
           "DMVAE", "DMVAEConfig", "TELBO", "TELBOConfig", "CRMVAE", "CRMVAEConfig", "CMVAE", "CMVAEConfig",
           "M2", "M2Config", "LadderVAE", "LadderVAEConfig"]
