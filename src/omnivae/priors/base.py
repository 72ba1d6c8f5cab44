"""What every fitted prior shares: its config (of its own kind), the latent size and the
`fitted` flag. Each subclass registers itself under its kind (`PRIORS`), so a config's kind
picks its class by lookup (build_prior) and a class refuses a config of another kind."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from omnivae.distributions import Gaussian
from omnivae.errors import ConfigError
from omnivae.priors.config import PriorConfig

PRIORS: dict[str, type[FittedPrior]] = {}  # prior kind -> the class that fits it


class FittedPrior(nn.Module):
    """A density over codes, fitted after training. Until `fit` runs it is the N(0, I) the
    model was trained against. Subclasses set `kind` and fill `fit_posteriors`."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        PRIORS.setdefault(cls.kind, cls)

    def __init__(self, latent_dim: int, config: PriorConfig | dict | None = None):
        super().__init__()
        config = config if isinstance(config, PriorConfig) else \
            PriorConfig.from_dict({"kind": self.kind, **(config or {})}, "prior")
        if not isinstance(self, PRIORS[config.kind]):
            raise ConfigError(f"{type(self).__name__} needs a prior config of kind {self.kind!r}, "
                              f"got {config.kind!r}")
        self.config, self.latent_dim = config, latent_dim

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def fit_posteriors(self, q: Gaussian, seed: int = 0) -> FittedPrior:
        """Fit on the training set's posteriors q [N,D] (each kind reads what it needs of them)."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError
