"""Priors for sampling: N(0, I) by default, or a Gaussian mixture fitted after training.

    prior = fit_prior(model, train_data, components=10)   # encodes, fits, attaches
    model.sample(8)                                         # codes now come from the mixture
"""
from __future__ import annotations

import warnings

import torch

from omnivae.batch import Batch
from omnivae.errors import InputError
from omnivae.priors.gmm import GaussianMixturePrior, PriorConfig

PRIORS = {"gmm": GaussianMixturePrior}


def build_prior(config: PriorConfig | dict, latent_dim: int) -> GaussianMixturePrior:
    """An (unfitted) prior from its config; its buffers are then filled by fit or by loading."""
    config = config if isinstance(config, PriorConfig) else PriorConfig.from_dict(config, "prior")
    return PRIORS[config.kind](latent_dim, config)


@torch.no_grad()
def encode_latents(model, data, batch_size: int = 512) -> torch.Tensor:
    """Joint posterior means [N,D] (all present modalities) of TensorData, RawData, a Batch or a dict;
    examples with no modality present are left out."""
    from omnivae.data.raw import RawData
    from omnivae.data.tensors import TensorData

    if isinstance(data, RawData):
        data = TensorData.from_raw(model, data)
    if not isinstance(data, TensorData):
        return model.encode(data).cpu()
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    keep = torch.stack([data.mask[n] for n in data.data]).any(0).nonzero().squeeze(1)
    was_training, dev, out = model.training, model.device, []
    model.eval()
    try:
        for idx in keep.split(batch_size):
            b = data.batch(idx)
            b = Batch({k: v.to(dev) for k, v in b.data.items()}, {k: m.to(dev) for k, m in b.mask.items()})
            out.append(model.encode(b).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise InputError("encode_latents: no example has any modality present")
    return torch.cat(out)


def supports_saved_prior(model) -> bool:
    """True when the model's config has a `prior` field (the prior then saves with the model)."""
    return "prior" in type(model.config).model_fields


def attach_prior(model, prior: GaussianMixturePrior):
    """Make `model.sample(n)` draw its codes from `prior` (as `model.prior`, saved with the model)."""
    if prior.latent_dim != model.config.latent_dim:
        raise InputError(f"prior has latent_dim {prior.latent_dim}, the model {model.config.latent_dim}")
    prior = prior.to(model.device)
    if supports_saved_prior(model):
        model.config = model.config.model_copy(update={"prior": prior.config})
        model.prior = prior
    else:  # config without a prior field: override this instance's prior_sample only
        warnings.warn("this model's config has no 'prior' field: the fitted prior is used for sampling "
                      "but is not saved with the model", stacklevel=2)
        model.prior_sample = prior.sample
    return model


def fit_prior(model, data, components: int | None = None, covariance: str | None = None,
              batch_size: int = 512, seed: int = 0, attach: bool = True) -> GaussianMixturePrior:
    """Fit a Gaussian mixture on the latent means of `data` (the training set) and, with
    attach, make it the model's sampling prior. Options default to the model's prior config."""
    base = getattr(model.config, "prior", None) or PriorConfig()
    config = PriorConfig.from_dict({"kind": "gmm", "components": components or base.components,
                                    "covariance": covariance or base.covariance}, "prior")
    z = encode_latents(model, data, batch_size)
    prior = GaussianMixturePrior(model.config.latent_dim, config).fit(z, seed=seed)
    if attach:
        attach_prior(model, prior)
    return prior


__all__ = ["PRIORS", "PriorConfig", "GaussianMixturePrior", "build_prior", "encode_latents",
           "attach_prior", "fit_prior", "supports_saved_prior"]
