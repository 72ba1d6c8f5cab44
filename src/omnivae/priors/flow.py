"""A normalising-flow prior fitted after training on the aggregate posterior of the training
set, q(z) = (1/N) sum_n q(z | x_n) (the prior that maximises the ELBO for the trained encoders
and decoders, Hoffman & Johnson 2016, "ELBO surgery"; fitted ex post as in Ghosh et al. 2020).

    u = (z - m) / s                          m, s: mean and std of q(z) per dimension
    p(z) = p_NSF(u) / prod_d s_d             p_NSF: zuko's neural spline flow (Durkan et al. 2019)
    fit:  maximise mean log p(z) over minibatches of examples n with one fresh draw
          z ~ q(z | x_n) = N(mu_n, exp(logvar_n)) per example and step (Adam, cosine decay)

Draws, not means: the decoders were trained on draws, and a latent dimension the model does
not use (collapsed: q(z_d | x) = N(0, 1) for every x) has means all near 0, a spike the flow
would have to squeeze into, while its draws are N(0, 1), which the flow learns as it is. Every
step sees new draws, so the flow does not memorise N points. Deterministic codes (autoencoders:
the smallest allowed variance) make the draws the means.

The flow's weights and m, s are module state (saved in model.safetensors); its options are in
the model config (`prior: {kind: flow, ...}`), so a saved model rebuilds it without code.
Until `fit` runs it is the N(0, I) the model was trained against.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from omnivae.distributions import Gaussian, log_standard_normal
from omnivae.errors import ConfigError, InputError
from omnivae.priors.base import FittedPrior
from omnivae.priors.config import PriorConfig

FIT_BATCH = 512  # examples per optimisation step
MAX_FLOW_PARAMETERS = 100_000_000  # a flow config larger than this is refused before it is built


def flow_size(features: int, context: int, transforms: int, hidden, per_feature: int) -> int:
    """Parameters of `transforms` autoregressive transforms, each an MLP from features + context
    through `hidden` to `per_feature` outputs per feature (an upper bound of zuko's masked MLPs)."""
    sizes = [features + context, *hidden, features * per_feature]
    return transforms * sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def build_zuko(make, features: int, context: int, transforms: int, hidden, per_feature: int) -> nn.Module:
    """`make()` (a zuko flow or transform) built on the CPU, then moved to the default device.
    zuko builds its masks with an op (unique over rows) that has no meta kernel, and a failed meta
    build imports the compiler stack (about a second); so the loader's allocation-free check on the
    meta device gets a CPU-built flow instead, whose size is bounded here before anything is allocated."""
    size = flow_size(features, context, transforms, hidden, per_feature)
    if size > MAX_FLOW_PARAMETERS:
        raise ConfigError(f"a flow of {transforms} transforms with hidden widths {list(hidden)} over {features} "
                          f"features would have about {size:,} parameters (more than {MAX_FLOW_PARAMETERS:,})")
    device = torch.get_default_device()
    with torch.device("cpu"):
        module = make()
    return module.to(device)


class FlowPrior(FittedPrior):
    kind = "flow"

    def __init__(self, latent_dim: int, config: PriorConfig | dict | None = None):
        super().__init__(latent_dim, config)
        import zuko

        cfg = self.config
        self.flow = build_zuko(lambda: zuko.flows.NSF(features=latent_dim, context=0, transforms=cfg.transforms,
                                                      bins=cfg.bins, hidden_features=tuple(cfg.hidden)),
                               latent_dim, 0, cfg.transforms, cfg.hidden, 3 * cfg.bins - 1)
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_std", torch.ones(latent_dim))
        self.register_buffer("fitted", torch.tensor(False))
        self.requires_grad_(False)  # trained only by fit, never by the model's optimiser

    def fit_posteriors(self, q: Gaussian, seed: int = 0) -> FlowPrior:
        return self.fit(q.mu, q.logvar, seed=seed)

    def fit(self, mu: torch.Tensor, logvar: torch.Tensor | None = None, seed: int = 0) -> FlowPrior:
        """Fit on posteriors N(mu, exp(logvar)) [N,D] (logvar None: on the points mu) on this
        module's device; see the module docstring."""
        d, dev = self.latent_dim, self.code_mean.device
        mu = torch.as_tensor(mu).detach().float().to(dev)
        points = logvar is None
        logvar = torch.as_tensor(mu if points else logvar).detach().float().to(dev)
        if mu.dim() != 2 or mu.shape[1] != d or logvar.shape != mu.shape:
            raise InputError(f"FlowPrior.fit: expected posteriors [N, {d}], got means {list(mu.shape)} "
                             f"and log-variances {list(logvar.shape)}")
        if len(mu) < 2:
            raise InputError(f"FlowPrior.fit needs at least 2 codes, got {len(mu)}")
        if not torch.isfinite(mu).all() or not torch.isfinite(logvar).all():
            raise InputError("FlowPrior.fit: the codes hold NaN or infinite values")
        std = torch.zeros_like(mu) if points else torch.exp(0.5 * logvar)
        self.code_mean.copy_(mu.mean(0))
        self.code_std.copy_((mu.var(0, unbiased=False) + std.pow(2).mean(0)).sqrt().clamp_min(1e-3))
        steps = self.config.steps or min(1500, max(100, math.ceil(60 * len(mu) / FIT_BATCH)))
        gen = torch.Generator(dev).manual_seed(seed)
        self.requires_grad_(True)
        self.train()
        opt = torch.optim.Adam(self.flow.parameters(), lr=self.config.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        try:
            for _ in range(steps):
                idx = torch.randint(len(mu), (min(FIT_BATCH, len(mu)),), generator=gen, device=dev)
                z = mu[idx] + std[idx] * torch.randn(len(idx), d, generator=gen, device=dev)
                loss = -self.flow().log_prob((z - self.code_mean) / self.code_std).mean() / d
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), 5.0)
                opt.step()
                sched.step()
        finally:
            self.requires_grad_(False)
            self.eval()
        self.fitted.fill_(True)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes [n,D]: base noise through the inverse flow, then back to the codes' units."""
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        eps = torch.randn(n, self.latent_dim, device=self.code_mean.device, generator=generator)
        if not self.is_fitted:
            return eps
        with torch.no_grad():
            u = self.flow().transform.inv(eps)
        return u * self.code_std + self.code_mean

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for codes [...,D] -> [...]."""
        if not self.is_fitted:
            return log_standard_normal(z)
        u = (z - self.code_mean) / self.code_std
        return self.flow().log_prob(u) - self.code_std.log().sum()
