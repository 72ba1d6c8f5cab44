"""MVAE (Wu & Goodman 2018): product-of-experts posterior with sub-sampled ELBOs.

loss = -[ELBO(all present modalities) + sum_m ELBO(x_m alone) + ELBOs of `extra_subsets`
random subsets], each ELBO reconstructing the modalities of its subset. All subset
posteriors come from one batched PoE over the once-computed unimodal experts.
With free_bits > 0 each subset's KL term becomes sum_d max(free_bits, batch-mean KL_d).
"""
from __future__ import annotations

import itertools
import math
from typing import Literal

import torch

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian, kl_objective
from omnivae.fusion import product_of_experts
from omnivae.models.base import ModelConfig, MultimodalModel


class MVAEConfig(ModelConfig):
    model: Literal["mvae"] = "mvae"
    extra_subsets: int = 0  # random subsets of size >= 2 (uniform over them) added to the objective each step
    unimodal_elbos: bool = True


class MVAE(MultimodalModel):
    about = "multimodal VAE, product of experts"
    paper = "Wu & Goodman 2018, Multimodal generative models for scalable weakly-supervised learning"
    config_class = MVAEConfig
    supports_free_bits = True

    def subsets(self, device) -> torch.Tensor:
        m = len(self.names)
        rows = [torch.ones(1, m, dtype=torch.bool, device=device)]
        if self.config.unimodal_elbos and m > 1:
            rows.append(torch.eye(m, dtype=torch.bool, device=device))
        if self.config.extra_subsets and m > 2:
            rows.append(self.random_subsets(self.config.extra_subsets, device))
        return torch.cat(rows)

    def random_subsets(self, n: int, device) -> torch.Tensor:
        """n subsets [n,M] drawn uniformly from those with at least two modalities, on the
        device and without a host sync: a size s in 2..M with probability C(M,s) / sum (by
        inverse CDF against Python thresholds), then the s modalities ranked first by a random
        permutation."""
        m = len(self.names)
        counts = [math.comb(m, s) for s in range(2, m + 1)]
        u = torch.rand(n, 1, device=device) * sum(counts)
        size = torch.full((n, 1), 2, dtype=torch.long, device=device)
        for edge in itertools.accumulate(counts[:-1]):  # size s + 1 once u passes C(m,2) + ... + C(m,s)
            size += (u >= edge).long()
        rank = torch.rand(n, m, device=device).argsort(1).argsort(1)  # a random permutation's ranks
        return rank < size

    def fuse(self, mu, logvar, present) -> Gaussian:
        """MVAE's posterior includes the prior expert N(0, I)."""
        return product_of_experts(mu, logvar, present.unsqueeze(0), prior_expert=True)[0]

    def rows_with(self, i: int, n_rows: int) -> list[int]:
        """Subset rows that can hold modality i: the joint, its unimodal row, the extras
        (plain Python indices, so no device-to-host sync)."""
        m = len(self.names)
        uni = [1 + i] if self.config.unimodal_elbos and m > 1 else []
        first_extra = 1 + (m if uni else 0)
        return [0, *uni, *range(first_extra, n_rows)]

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = self.encode_unimodal(batch)
        subsets = self.subsets(mu.device)  # [S,M]
        weights = subsets.unsqueeze(-1) & present.unsqueeze(0)  # [S,M,B]
        q = product_of_experts(mu, logvar, weights, prior_expert=True)
        z = q.rsample()  # [S,B,D]
        rec = torch.zeros_like(z[..., 0])
        for i, name in enumerate(self.names):  # each decoder sees only the subsets holding it
            rows = self.rows_with(i, len(subsets))
            ll = self.log_likelihoods(z[rows], batch, [name])[name]
            ll = ll * subsets[rows, i].unsqueeze(-1).to(ll.dtype)  # random extras may not hold i
            rec = rec.index_add(0, torch.tensor(rows, device=z.device), ll)
        kl = q.kl_standard()
        valid = weights.any(1).to(kl.dtype)  # [S,B]: the subset has a present modality
        beta = self.config.beta * beta_scale
        kl_term = kl_objective(q, valid, self.config.free_bits) if self.config.free_bits > 0 else kl
        elbo = ((rec - beta * kl_term) * valid).sum(0).mean()
        total = -elbo
        return LossOutput(total, {"loss": total.detach(), "rec": (rec * valid).sum(0).mean().detach(),
                                  "kl": (kl * valid).sum(0).mean().detach()})
