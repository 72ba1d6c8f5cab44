"""CMVAE (Palumbo, Laguna, Chopard & Vogt 2024, "Deep generative clustering with multimodal
diffusion variational autoencoders"): MMVAE+ whose shared code z has a learned
mixture-of-Gaussians prior, one component per cluster.

Generative model: c ~ Cat(pi), z | c ~ N(mu_c, I), w_n ~ N(0, I), x_n ~ p(x_n | z, w_n), with
pi = softmax(logits) and the cluster means mu_c learned (the component scales stay 1, as in the
paper's code). Everything else is mmvae_plus (codes [z, w_m], mixture-of-experts posterior for
z, auxiliary priors r_n for cross reconstructions, the elbo / iwae / dreg estimators). With the
cluster posterior q(c | z, X) = p(c | z) (the paper's choice), the expectation over c in
  log W = sum_n log p(x_n | z, w~_n)
          + beta * E_q(c|z,X) [log pi_c + log N(z; mu_c, I) - log q(c|z,X)]
          + beta * (log N(w_m; 0, I) - log (1/M) sum_m' q_m'(z|x_m') - log q_m(w_m|x_m))
equals log p(z) = log sum_c pi_c N(z; mu_c, I) exactly, which is what is computed: MMVAE+'s
objective with the standard normal prior of z replaced by the mixture.

Clusters: `cluster(batch)` assigns each example to argmax_c of the mean over its given
modalities m of p(c | z_m), z_m the mean of q_m(z|x_m) (MultiVae takes a majority vote over
the modalities' assignments from draws); `cluster_probabilities` returns that mean. Draws
from the prior (`prior_sample`, so `sample`) pick a cluster, then z.
Left out: the diffusion decoders that the paper trains post hoc to sharpen images, and its
post-hoc selection of the number of clusters (pruning the least used ones by an entropy
criterion); `clusters` fixes the number. Gaussian posteriors replace the paper's Laplace ones.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from omnivae.config import PositiveInt
from omnivae.distributions import log_normal
from omnivae.models.mmvae_plus import MMVAEPlus, MMVAEPlusConfig
from omnivae.models.registry import register_model


class CMVAEConfig(MMVAEPlusConfig):
    model: Literal["cmvae"] = "cmvae"
    clusters: PositiveInt = 10  # mixture components of the shared code's prior (the paper: 10, then pruned)


class CMVAE(MMVAEPlus):
    about = "MMVAE+ with a mixture-of-Gaussians prior for clustering"
    paper = "Palumbo et al. 2024, Deep generative clustering with multimodal diffusion variational autoencoders"
    config_class = CMVAEConfig

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        self.cluster_logits = nn.Parameter(torch.zeros(config.clusters))
        self.cluster_means = nn.Parameter(2 * torch.rand(config.clusters, config.latent_dim) - 1)

    def log_joint_clusters(self, z: torch.Tensor) -> torch.Tensor:
        """log pi_c + log N(z; mu_c, I) for shared codes z [...,D] -> [...,C]."""
        log_pi = torch.log_softmax(self.cluster_logits, 0)
        return log_pi + log_normal(z.unsqueeze(-2), self.cluster_means, torch.zeros_like(self.cluster_means))

    def shared_log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) under the mixture prior, in place of MMVAE+'s N(0, I): [...,D] -> [...]."""
        return torch.logsumexp(self.log_joint_clusters(z), -1)

    def prior_sample(self, n: int) -> torch.Tensor:
        """A cluster c ~ pi, then z ~ N(mu_c, I) (a fitted `prior`, if the model has one)."""
        if self.prior is not None:
            return super().prior_sample(n)
        c = torch.multinomial(torch.softmax(self.cluster_logits, 0), n, replacement=True)
        return self.cluster_means[c] + torch.randn(n, self.config.latent_dim, device=self.device)

    @torch.no_grad()
    def cluster_probabilities(self, batch, given=None, mask=None) -> torch.Tensor:
        """[B,C]: the mean over the given present modalities m of p(c | z_m), z_m the mean of
        q_m(z|x_m); the prior pi for an example with none of them present."""
        batch = self.as_batch(batch, mask)
        mu, _, present = self.encode_unimodal(batch, self._given(batch, given))
        post = torch.softmax(self.log_joint_clusters(mu[..., :self.config.latent_dim]), -1)  # [M,B,C]
        w = present.to(post.dtype).unsqueeze(-1)
        mean = (post * w).sum(0) / w.sum(0).clamp_min(1.0)
        return torch.where(present.any(0).unsqueeze(-1), mean, torch.softmax(self.cluster_logits, 0))

    def cluster(self, batch, given=None, mask=None) -> torch.Tensor:
        """Cluster ids [B] (long) of the examples: argmax of `cluster_probabilities`."""
        return self.cluster_probabilities(batch, given, mask).argmax(-1)


register_model("cmvae", CMVAE)
