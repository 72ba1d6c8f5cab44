"""Posterior-collapse checks: does the latent code carry information, and does the decoder use it?

- active_units (Burda et al. 2016): dimensions whose posterior mean varies across inputs,
  Var_x(E_q[z_d | x]) > threshold. A collapsed dimension has q(z_d | x) = p(z_d) for every x.
- mutual_information (the estimate of He et al. 2019): I(x; z) = E_x[KL(q(z|x) || q(z))],
  with the aggregate posterior q(z) taken as the mixture of the N posteriors given.
  0 when every x gets the same posterior; at most log N.
- caption_sensitivity: share of distinct captions decoded from different codes; a decoder
  that ignores z writes one caption for all of them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from omnivae.distributions import LOG_2PI


def _check_codes(name: str, x, dims: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [N, D], received {type(x).__name__}")
    if x.dim() != dims or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor [N, D] with N >= 1, received "
                         f"shape {list(x.shape)} and dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, received NaN or inf")
    return x


def unit_variances(mu: torch.Tensor) -> torch.Tensor:
    """Var over examples of each dimension's posterior mean: mu [N,D] -> [D] (0 when N == 1)."""
    mu = _check_codes("mu", mu).detach().double()
    if len(mu) < 2:
        return torch.zeros(mu.shape[1], dtype=torch.float64)
    return mu.var(0, unbiased=False)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dimensions with Var_x(E_q[z_d | x]) > threshold: mu [N,D] -> int."""
    if not threshold >= 0:
        raise ValueError(f"threshold: expected a number >= 0, received {threshold!r}")
    return int((unit_variances(mu) > threshold).sum())


@torch.no_grad()
def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, samples: int = 1,
                       generator: torch.Generator | None = None, chunk: int = 1024) -> float:
    """Estimate of I(x; z) in nats from N diagonal Gaussian posteriors mu, logvar [N,D].

    For draws z_i ~ q(z | x_i): mean_i [log q(z_i | x_i) - log (1/N) sum_j q(z_i | x_j)]
    (He et al. 2019, with the entropy term taken at the same draws, so identical posteriors
    give exactly 0). `samples` draws per example; `generator` makes it reproducible without
    touching the global random stream. Cost: O(N^2 D), computed `chunk` rows at a time.
    """
    mu, logvar = _check_codes("mu", mu).detach().double(), _check_codes("logvar", logvar).detach().double()
    if mu.shape != logvar.shape:
        raise ValueError(f"logvar: expected the shape of mu {list(mu.shape)}, received {list(logvar.shape)}")
    if samples < 1 or chunk < 1:
        raise ValueError(f"samples and chunk: expected ints >= 1, received {samples!r}, {chunk!r}")
    n, d = mu.shape
    std, inv_var = torch.exp(0.5 * logvar), torch.exp(-logvar)
    log_norm = -0.5 * (d * LOG_2PI + logvar.sum(-1))  # [N]: log-density constant of each q(.|x_j)
    total = 0.0
    for _ in range(samples):
        eps = torch.randn(mu.shape, generator=generator).to(mu)  # drawn on the CPU: any device, same draws
        z = mu + eps * std  # [N,D]
        log_own = log_norm - 0.5 * eps.pow(2).sum(-1)  # log q(z_i | x_i)
        for start in range(0, n, chunk):
            zi = z[start:start + chunk, None, :]  # [c,1,D]
            log_q = log_norm - 0.5 * ((zi - mu).pow(2) * inv_var).sum(-1)  # [c,N]: log q(z_i | x_j)
            log_mix = torch.logsumexp(log_q, 1) - math.log(n)
            total += float((log_own[start:start + chunk] - log_mix).sum())
    return total / (n * samples)


def distinct_ratio(captions: Sequence[str]) -> float:
    """Number of distinct captions (after lower-casing and collapsing spaces) / number of captions."""
    if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions: expected a non-empty list of strings")
    return len({" ".join(c.lower().split()) for c in captions}) / len(captions)


@torch.no_grad()
def caption_sensitivity(model, text_name: str, z: torch.Tensor, **options) -> float:
    """Share of distinct captions that the text decoder writes for codes z [N,D] (greedy
    unless `options` say otherwise). Near 1/N: the decoder ignores z (posterior collapse)."""
    if text_name not in getattr(model, "modalities", {}):
        raise ValueError(f"text_name: the model has no modality {text_name!r}; it has {list(model.modalities)}")
    found = output_diversity(model, text_name, z, **options)
    if "distinct_captions" not in found:
        raise ValueError(f"text_name: modality {text_name!r} is {model.modalities[text_name].kind!r}, "
                         "whose outputs are not captions")
    return found["distinct_captions"]


@torch.no_grad()
def output_diversity(model, name: str, z: torch.Tensor, **options) -> dict[str, float]:
    """The collapse checks of modality `name`'s kind (`Modality.output_diversity`, e.g. the share
    of distinct captions) on its outputs decoded from codes z [N,D]; empty when the kind has none
    (nothing is decoded then)."""
    modality = model.modalities[name]
    if not modality.checks_diversity:
        return {}
    _check_codes("z", z)
    return modality.output_diversity(model.decode(z.to(model.device), [name], **options)[name])
