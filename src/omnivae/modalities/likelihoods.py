"""Per-example log-likelihoods summed over all data dims: out[S,B,F] against x[B,F] -> [S,B]."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x * logits - F.softplus(logits)).sum(-1)


def gaussian(mean: torch.Tensor, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((x - mean) * torch.exp(-log_scale)).pow(2) - log_scale - HALF_LOG_2PI).sum(-1)


def laplace(mean: torch.Tensor, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    return (-(x - mean).abs() * torch.exp(-log_scale) - log_scale - math.log(2.0)).sum(-1)


def categorical(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """logits [S,B,K], x long [B] -> [S,B]."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, x.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


CONTINUOUS = {"gaussian": gaussian, "laplace": laplace}
