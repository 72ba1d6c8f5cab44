"""MHVAE (Dorent et al. 2023, "Unified brain MR-ultrasound synthesis using multi-modal
hierarchical representations"): a hierarchical VAE whose posterior at every level is a product
of experts of the prior and one expert per given modality.

Latents z_1 .. z_L (z_1 of size `latent_dim`, read by every decoder; z_2 .. z_L of the sizes in
`upper`, top last). Generative model: p(z_L) = N(0, I), p(z_l | z_l+1) = N(prior_l(h_l)) with
h_l = down_l(z_l+1), and p(x_m | z_1) for every modality.

Inference for a subset S of the modalities: each modality's own encoder gives features d_m,1
(its [mu, logvar]), bottom-up networks give d_m,2 .. d_m,L, and going down
  q(z_L | x_S)        = p(z_L) x prod_{m in S} N(head_m(d_m,L))
  q(z_l | x_S, z_l+1) = p(z_l | z_l+1) x prod_{m in S} N(post_m,l([h_l, d_m,l]))
so a missing modality is an expert left out, as in MVAE.

Objective (the paper's, as the reference library writes it): for a subset S,
  ELBO_S = sum_m w_m log p(x_m | z_1) - beta * sum_l KL(q(z_l | x_S, z_l+1) || p(z_l | z_l+1))
with z drawn from the posterior of S and every present modality reconstructed; the loss
averages ELBO_S over the non-empty subsets of the present modalities. `subsets` chooses which
subsets each step computes, all in one batched pass (the subset is the decoders' sample axis):
  "unimodal" (default): the full set and each modality alone, M + 1 subsets (with two
             modalities: every subset, as the reference library computes them);
  "all":     every non-empty subset, 2^M - 1 of them;
  "sample":  one subset per example, drawn uniformly (an unbiased estimate of the average at a
             single decoder pass, but each subset gets a fraction of the signal: on shapes medium
             at 25 epochs, decoding posterior draws, caption->image 0.74 and image->caption 0.83,
             against 0.94 and 0.99 for "unimodal").
A subset keeps only the modalities an example has; an example that has none of a subset's
modalities adds nothing for it. w_m is the likelihood weight and beta_scale (KL warm-up)
multiplies beta.

User API: codes are z_1. `fuse` gives q(z_1 | x_S) with the upper levels at their means,
`draw` samples down the hierarchy, and `prior_sample` samples the hierarchical prior.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian, kl_normal, masked_mean
from omnivae.errors import ConfigError
from omnivae.fusion import product_of_experts
from omnivae.modalities.base import mlp
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.models.hierarchical import gaussian_head
from omnivae.models.registry import register_model


class MHVAEConfig(ModelConfig):
    model: Literal["mhvae"] = "mhvae"
    upper: list[PositiveInt] = Field(default=[16], min_length=1)  # sizes of z_2 .. z_L (top last)
    hidden: list[PositiveInt] = [128]  # hidden widths of the bottom-up, top-down, prior and posterior networks
    features: PositiveInt = 128  # width of each level's bottom-up and top-down features
    subsets: Literal["unimodal", "all", "sample"] = "unimodal"  # the ELBOs each step computes (module doc)


def subset_draw(present: torch.Tensor) -> torch.Tensor:
    """One non-empty subset of each example's present modalities [M,B], uniform over the 2^k - 1
    of them: each modality kept with probability 1/2, redrawn (for all rows at once, with fixed
    shapes) until every example with a modality keeps one."""
    use = present & (torch.rand(present.shape, device=present.device) < 0.5)
    for _ in range(64):  # a row stays empty with probability 1/2 per round at worst
        empty = present.any(0) & ~use.any(0)
        if not bool(empty.any()):
            break
        redraw = present & (torch.rand(present.shape, device=present.device) < 0.5)
        use = torch.where(empty.unsqueeze(0), redraw, use)
    empty = present.any(0) & ~use.any(0)  # after 64 rounds (never in practice): all present ones
    return torch.where(empty.unsqueeze(0), present, use)


def subset_rows(m: int, which: str, device) -> torch.Tensor:
    """The subsets [K,M] that each step's objective computes ("unimodal" or "all", module doc)."""
    if which == "all":
        codes = torch.arange(1, 2 ** m, device=device)
        return (codes.unsqueeze(1) >> torch.arange(m, device=device)) & 1 == 1
    full = torch.ones(1, m, dtype=torch.bool, device=device)
    return torch.cat([full, torch.eye(m, dtype=torch.bool, device=device)])


def repeat_rows(t: torch.Tensor, copies: int) -> torch.Tensor:
    """[M,B,...] -> [M,copies*B,...], copy-major (row c*B + b is copy c of example b)."""
    return t.unsqueeze(1).expand(t.shape[0], copies, *t.shape[1:]).reshape(t.shape[0], -1, *t.shape[2:])


def with_prior(prior: Gaussian, mu: torch.Tensor, logvar: torch.Tensor, use: torch.Tensor) -> Gaussian:
    """The product of the prior [B,D] and the experts mu/logvar [M,B,D] marked in `use` [M,B]."""
    mus, logvars = torch.cat([prior.mu.unsqueeze(0), mu]), torch.cat([prior.logvar.unsqueeze(0), logvar])
    weights = torch.cat([torch.ones_like(use[:1]), use]).unsqueeze(0)
    return product_of_experts(mus, logvars, weights, prior_expert=False)[0]


class MHVAE(MultimodalModel):
    about = "hierarchical multimodal VAE: a product of experts at every level of a ladder"
    paper = ("Dorent et al. 2023, Unified brain MR-ultrasound synthesis using multi-modal hierarchical "
             "representations")
    config_class = MHVAEConfig

    @classmethod
    def run_defaults(cls, train) -> dict:
        """A KL warm-up of 10 epochs (at most half the run), as ladder VAEs train, and a learning rate
        of 2e-3. On shapes medium at 25 epochs (benchmarks/bench_quality.py, seeds 0, 1, 2), the
        warm-up took caption->image from 0.95 / 0.93 / 0.84 to 0.94 / 1.00 / 0.99 and image->caption
        from 0.88 / 0.85 / 0.55 to 0.93 / 0.98 / 0.99. With it, at lr 1e-3 seed 0 still drew small
        diamonds as circles (image->image kept half of them): caption->image 0.94; at 2e-3 the
        three seeds give 0.98 / 0.99 / 1.00 and image->caption 0.97 / 0.97 / 0.99."""
        return {"train": {"kl_warmup_epochs": min(10.0, train.max_epochs / 2), "lr": 2e-3}}

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        dims, f, hid = [config.latent_dim, *config.upper], config.features, config.hidden
        self.dims = dims
        levels = len(dims)
        # per modality: d_1 = [mu, logvar] of its encoder, then one network per level above
        self.up = nn.ModuleDict({n: nn.ModuleList(
            [mlp([2 * dims[0] if i == 0 else f, *hid, f]) for i in range(levels - 1)]) for n in self.names})
        self.head = nn.ModuleDict({n: mlp([f if levels > 1 else 2 * dims[0], *hid, 2 * dims[-1]])
                                   for n in self.names})
        # level l (0-based, below the top): h = down[l](z_l+1), prior[l](h), post[m][l]([h, d_m,l])
        self.down = nn.ModuleList([mlp([dims[i + 1], *hid, f]) for i in range(levels - 1)])
        self.prior_net = nn.ModuleList([mlp([f, *hid, 2 * dims[i]]) for i in range(levels - 1)])
        self.post = nn.ModuleDict({n: nn.ModuleList(
            [mlp([f + (2 * dims[0] if i == 0 else f), *hid, 2 * dims[i]]) for i in range(levels - 1)])
            for n in self.names})

    def check_config(self) -> None:
        if len(self.names) < 2:
            raise ConfigError(f"model 'mhvae' needs at least two modalities, got {self.names}; use ladder_vae "
                              "for a hierarchy over one")

    # -- the hierarchy -----------------------------------------------------------------------
    def features(self, mu: torch.Tensor, logvar: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up features [M,B,.] of each level from the modality encoders' mu/logvar [M,B,D]."""
        feats = [torch.cat([mu, logvar], -1)]
        for i in range(len(self.dims) - 1):
            feats.append(torch.stack([self.up[n][i](feats[-1][k]) for k, n in enumerate(self.names)]))
        return feats

    def experts(self, nets, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's network on its row of x [M,B,.] -> mu, logvar [M,B,D]."""
        out = [gaussian_head(nets[k], x[k]) for k in range(len(self.names))]
        return torch.stack([q.mu for q in out]), torch.stack([q.logvar for q in out])

    def posteriors(self, mu, logvar, use, sample: bool = True, copies: int = 1):
        """Down the hierarchy for the modalities in `use` [M,copies*B]: (z_1 [copies*B,D], the
        posterior and the prior of every level, top first). sample=False takes each level's mean.
        copies > 1: every example's rows go down `copies` times (copy-major, repeat_rows), with
        the bottom-up networks run once per example."""
        feats = self.features(mu, logvar)
        top_mu, top_lv = self.experts([self.head[n] for n in self.names], feats[-1])
        if copies > 1:
            feats = [repeat_rows(f, copies) for f in feats[:-1]]
            top_mu, top_lv = repeat_rows(top_mu, copies), repeat_rows(top_lv, copies)
        zeros = torch.zeros_like(top_mu[0])
        q = with_prior(Gaussian(zeros, zeros), top_mu, top_lv, use)
        levels = [(q, Gaussian(zeros, zeros))]
        z = q.rsample() if sample else q.mu
        for i in range(len(self.dims) - 2, -1, -1):
            h = self.down[i](z)
            p = gaussian_head(self.prior_net[i], h)
            e_mu, e_lv = self.experts([self.post[n][i] for n in self.names],
                                      torch.cat([h.expand(len(self.names), *h.shape), feats[i]], -1))
            q = with_prior(p, e_mu, e_lv, use)
            levels.append((q, p))
            z = q.rsample() if sample else q.mu
        return z, levels

    def fuse(self, mu, logvar, present) -> Gaussian:
        """q(z_1 | x_present) with the levels above at their means (the prior where none is present)."""
        return self.posteriors(mu, logvar, present, sample=False)[1][-1][0]

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        """n draws [n,B,D] of z_1, sampling every level on the way down."""
        z, _ = self.posteriors(mu, logvar, repeat_rows(present, n), sample=True, copies=n)
        return z.reshape(n, mu.shape[1], -1)  # rows were repeated n-major

    def prior_sample(self, n: int) -> torch.Tensor:
        """n codes z_1 [n,D] from the hierarchical prior (a fitted prior over z_1, if the model has one)."""
        if self.prior is not None:
            return self.prior.sample(n)
        z = torch.randn(n, self.dims[-1], device=self.device)
        for i in range(len(self.dims) - 2, -1, -1):
            z = gaussian_head(self.prior_net[i], self.down[i](z)).rsample()
        return z

    # -- the objective -----------------------------------------------------------------------
    def loss_subsets(self, present: torch.Tensor) -> torch.Tensor:
        """The modalities each ELBO uses [K,M,B]: one subset row per ELBO (eval: the present ones)."""
        if not self.training:
            return present.unsqueeze(0)
        if self.config.subsets == "sample":
            return subset_draw(present).unsqueeze(0)
        rows = subset_rows(len(self.names), self.config.subsets, present.device)  # [K,M]
        return rows.unsqueeze(-1) & present.unsqueeze(0)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = self.encode_unimodal(batch)
        use = self.loss_subsets(present)  # [K,M,B]
        k, m, b = use.shape
        z, levels = self.posteriors(mu, logvar, use.transpose(0, 1).reshape(m, k * b), copies=k)  # subset-major
        lls = self.log_likelihoods(z.view(k, b, -1), batch)  # the subsets as the decoders' sample axis
        rec = sum(lls.values())  # [K,B]; absent entries score 0
        kls = [kl_normal(q.mu, q.logvar, p.mu, p.logvar).view(k, b) for q, p in levels]  # top first, each [K,B]
        kl = torch.stack(kls).sum(0)
        valid = use.any(1)  # [K,B]: the subset keeps a modality of the example
        total = -masked_mean(rec - self.config.beta * beta_scale * kl, valid)
        terms = {"loss": total.detach(), "rec": masked_mean(rec, valid).detach(),
                 "kl": masked_mean(kl, valid).detach()}
        terms.update({f"kl_z{len(kls) - i}": masked_mean(k, valid).detach() for i, k in enumerate(kls)})
        return LossOutput(total, terms)


register_model("mhvae", MHVAE)
