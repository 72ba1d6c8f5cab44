"""Product of Gaussian experts (MVAE, Wu & Goodman 2018): precisions add up."""
from __future__ import annotations

import torch

from omnivae.distributions import Gaussian, clamp_logvar


def product_of_experts(mu: torch.Tensor, logvar: torch.Tensor, weights: torch.Tensor,
                       prior_expert: bool = True) -> Gaussian:
    """Fuse experts mu/logvar [M,B,D] with weights [S,M,B] (1 = expert used) -> Gaussian [S,B,D].

    Each of the S subsets is one row of `weights` (subset membership times presence).
    With prior_expert, N(0, I) joins every product; a subset with no expert at all
    then gives the prior (without prior_expert, it also falls back to the prior).
    """
    w = weights.to(mu.dtype)
    precision = torch.exp(-logvar)
    with torch.autocast(mu.device.type, enabled=False):  # sums of precisions stay fp32 under bf16 autocast
        joint_precision = torch.einsum("smb,mbd->sbd", w, precision)
        joint_mean_num = torch.einsum("smb,mbd->sbd", w, precision * mu)
    if prior_expert:
        joint_precision = joint_precision + 1.0
    else:
        empty = (w.sum(1) == 0).unsqueeze(-1).to(mu.dtype)  # [S,B,1]
        joint_precision = joint_precision + empty
    joint_mu = joint_mean_num / joint_precision
    return Gaussian(joint_mu, clamp_logvar(-torch.log(joint_precision)))
