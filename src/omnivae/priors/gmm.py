"""Gaussian mixture prior fitted after training on the training set's latent means
(ex-post density estimation, Ghosh et al. 2020, "From variational to deterministic
autoencoders"). Prior samples then land where the decoders were trained, not in the
holes of N(0, I) that the aggregate posterior leaves empty."""
from __future__ import annotations

import numpy as np
import torch

from omnivae.distributions import Gaussian
from omnivae.errors import InputError
from omnivae.priors.base import FittedPrior
from omnivae.priors.config import PriorConfig


class GaussianMixturePrior(FittedPrior):
    """p(z) = sum_k w_k N(z; mean_k, L_k L_k^T), parameters kept as buffers (saved with safetensors).
    Until `fit` runs it is the N(0, I) the model was trained against."""

    kind = "gmm"

    def __init__(self, latent_dim: int, config: PriorConfig | dict | None = None):
        super().__init__(latent_dim, config)
        k, d = self.config.components, latent_dim
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("scale_tril", torch.eye(d).expand(k, d, d).clone())
        self.register_buffer("fitted", torch.tensor(False))

    def fit_posteriors(self, q: Gaussian, seed: int = 0) -> GaussianMixturePrior:
        """Fit on the posterior means (the codes `encode` gives)."""
        return self.fit(q.mu, seed=seed)

    def fit(self, z: torch.Tensor, seed: int = 0, max_iter: int = 200) -> GaussianMixturePrior:
        """Fit the mixture to codes z [N,D] with scikit-learn's EM (k-means initialisation)."""
        from sklearn.mixture import GaussianMixture

        z = torch.as_tensor(z).detach().float().cpu()
        k, d = self.config.components, self.latent_dim
        if z.dim() != 2 or z.shape[1] != d:
            raise InputError(f"GaussianMixturePrior.fit: expected codes [N, {d}], got {list(z.shape)}")
        if len(z) < k:
            raise InputError(f"GaussianMixturePrior.fit: {k} components need at least {k} codes, got {len(z)}")
        if not torch.isfinite(z).all():
            raise InputError("GaussianMixturePrior.fit: the codes hold NaN or infinite values")
        gmm = GaussianMixture(k, covariance_type=self.config.covariance, reg_covar=1e-6,
                              max_iter=max_iter, random_state=seed).fit(z.double().numpy())
        cov = gmm.covariances_
        tril = np.linalg.cholesky(cov) if self.config.covariance == "full" else \
            np.sqrt(cov)[:, :, None] * np.eye(d)
        dev = self.means.device
        self.weights.copy_(torch.as_tensor(gmm.weights_, device=dev))
        self.means.copy_(torch.as_tensor(gmm.means_, device=dev))
        self.scale_tril.copy_(torch.as_tensor(tril, device=dev))
        self.fitted.fill_(True)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes [n,D]: a component by weight, then mean + L eps."""
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        dev = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, 1, device=dev, generator=generator)
        return self.means[k] + (self.scale_tril[k] @ eps).squeeze(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for codes [...,D] -> [...]."""
        mix = torch.distributions.Categorical(probs=self.weights)
        comp = torch.distributions.MultivariateNormal(self.means, scale_tril=self.scale_tril)
        return torch.distributions.MixtureSameFamily(mix, comp).log_prob(z)
