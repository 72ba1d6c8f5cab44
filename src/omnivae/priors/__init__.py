"""Priors for sampling: N(0, I) by default, or a density fitted after training on the
training set's codes: a Gaussian mixture (kind "gmm", on the posterior means) or a
normalising flow (kind "flow", on posterior draws; see omnivae.priors.flow).

    prior = fit_prior(model, train_data, components=10)   # encodes, fits, attaches
    prior = fit_prior(model, train_data, kind="flow")     # or a flow
    model.sample(8)                                         # codes now come from the fitted prior
"""
from __future__ import annotations

import warnings

import torch

from omnivae.batch import Batch
from omnivae.distributions import Gaussian
from omnivae.errors import InputError
from omnivae.priors.base import PRIORS, FittedPrior
from omnivae.priors.config import KIND_OPTIONS, PriorConfig
from omnivae.priors.flow import FlowPrior
from omnivae.priors.gmm import GaussianMixturePrior

Prior = FittedPrior


def build_prior(config: PriorConfig | dict, latent_dim: int) -> Prior:
    """An (unfitted) prior from its config; its buffers are then filled by fit or by loading."""
    config = config if isinstance(config, PriorConfig) else PriorConfig.from_dict(config, "prior")
    return PRIORS[config.kind](latent_dim, config)


@torch.no_grad()
def encode_posteriors(model, data, batch_size: int = 512) -> Gaussian:
    """Joint posteriors [N,D] (all present modalities) of TensorData, RawData, a Batch or a dict;
    examples with no modality present are left out of TensorData and RawData."""
    from omnivae.data.raw import RawData
    from omnivae.data.tensors import TensorData

    if isinstance(data, RawData):
        data = TensorData.from_raw(model, data)
    if not isinstance(data, TensorData):
        batch = model.as_batch(data)
        q = model.fuse(*model.encode_unimodal(batch))
        return Gaussian(q.mu.cpu(), q.logvar.cpu())
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    every = torch.ones(len(data), dtype=torch.bool)  # a modality without a mask is present everywhere
    keep = torch.stack([data.mask.get(n, every) for n in data.data]).any(0).nonzero().squeeze(1)
    was_training, dev, mus, logvars = model.training, model.device, [], []
    model.eval()
    try:
        for idx in keep.split(batch_size):
            b = data.batch(idx)
            b = Batch({k: v.to(dev) for k, v in b.data.items()}, {k: m.to(dev) for k, m in b.mask.items()})
            q = model.fuse(*model.encode_unimodal(b))
            mus.append(q.mu.cpu()), logvars.append(q.logvar.cpu())
    finally:
        model.train(was_training)
    if not mus:
        raise InputError("encode_latents: no example has any modality present")
    return Gaussian(torch.cat(mus), torch.cat(logvars))


def encode_latents(model, data, batch_size: int = 512) -> torch.Tensor:
    """Joint posterior means [N,D] (what `model.encode` gives); see encode_posteriors."""
    return encode_posteriors(model, data, batch_size).mu


def supports_saved_prior(model) -> bool:
    """True when the model's config has a `prior` field (the prior then saves with the model)."""
    return "prior" in type(model.config).model_fields


def attach_prior(model, prior: Prior):
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


def fit_prior(model, data, kind: str | None = None, batch_size: int = 512, seed: int = 0, attach: bool = True,
              **options) -> Prior:
    """Fit a sampling prior on the codes of `data` (the training set) and, with attach, make it
    the model's. kind: "gmm" (a Gaussian mixture on the posterior means) or "flow" (a
    normalising flow on posterior draws); None: the kind of the model's prior config, else gmm.
    options: that kind's PriorConfig options (components, covariance; transforms, hidden, bins,
    steps, lr); those not given (or None) come from the model's prior config when it is of the
    same kind, else the defaults. An option of the other kind is a ConfigError.
    batch_size: examples encoded at a time."""
    base = getattr(model.config, "prior", None)
    kind = kind or (base.kind if base is not None else "gmm")
    # a saved config holds only its own kind's options: those of the chosen kind carry over
    inherited = {k: v for k, v in (base.model_dump() if base is not None else {}).items() if k in KIND_OPTIONS[kind]}
    given = {k: v for k, v in options.items() if v is not None}
    config = PriorConfig.from_dict({**inherited, **given, "kind": kind}, "prior")
    q = encode_posteriors(model, data, batch_size)
    with torch.random.fork_rng():  # initial weights (a flow's): the same for a seed
        torch.manual_seed(seed)
        prior = build_prior(config, model.config.latent_dim)
    prior.fit_posteriors(q, seed=seed)
    if attach:
        attach_prior(model, prior)
    return prior


__all__ = ["PRIORS", "FittedPrior", "PriorConfig", "GaussianMixturePrior", "FlowPrior", "build_prior", "encode_posteriors",
           "encode_latents", "attach_prior", "fit_prior", "supports_saved_prior"]
