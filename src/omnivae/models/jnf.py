"""JNF (Senellart et al. 2023, "Improving Multimodal Joint Variational
Autoencoders through Normalizing Flows and Correlation Analysis"): a joint VAE whose unimodal
posteriors are made flexible by normalising flows and fitted to its joint posterior.

Joint part (JMVAE's joint encoder, a network of its own over the raw inputs, see
omnivae.models.jmvae), with z ~ q(z|X):
  ELBO = sum_m w_m log p(x_m|z) - beta * KL(q(z|X) || N(0, I))
Unimodal posteriors: q_m(z|x_m) = N(T_m(z); mu_m(x_m), diag sigma_m^2(x_m)) |det dT_m/dz|,
T_m a masked autoregressive flow (zuko's MAF) and (mu_m, sigma_m) the modality's encoder. They
are fitted to the joint posterior by the paper's unimodal terms, the same draw z taken as a
constant (detached):
  L_uni = -sum_m log q_m(z|x_m)   (= sum_m KL(q(z|X) || q_m(z|x_m)) + const in the unimodal parameters)
loss = -ELBO + L_uni, averaged over the complete examples (every modality present; the others
take part in no term, as in JMVAE). beta_scale (KL warm-up) multiplies beta.

Two phases, as in the paper, switched by `on_train_epoch_start`: in the first `warmup` epochs the
joint encoder and the decoders train on the ELBO; afterwards they are frozen (computed without
gradients) and only the unimodal encoders and flows train on L_uni. Unlike the paper, the
unimodal part also trains during the warm-up unless `unimodal_in_warmup` is false; its draws
are detached, so this never changes what the joint part learns, and a run that early stopping
ends inside the warm-up still has usable unimodal posteriors. The loss value is the same
formula in both phases (only which parts get gradients changes), so val/loss stays comparable
for checkpoints and early stopping. A model used outside the trainer is in the first phase.

Inference (`fuse`, `draw`, so `encode`, `generate`): the joint encoder for the rows with every
modality given (as JMVAE); a single given modality m uses q_m; several but not all (three or
more modalities) use the uniform mixture of their q_m (the paper samples their product of
experts with Hamiltonian Monte Carlo instead). `draw` samples the flows exactly; `fuse` must
return a Gaussian, so for the flow posteriors it gives a summary: mean T_m^{-1}(mu_m) (the
flow's image of the base mean) and the base variance sigma_m^2, moment-matched across the
mixture. Nothing given: N(0, I).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch
import zuko
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.config import PositiveInt
from omnivae.distributions import Gaussian, log_normal, masked_mean
from omnivae.errors import ConfigError
from omnivae.fusion import moment_matched_mixture
from omnivae.models.base import MultimodalModel
from omnivae.models.jmvae import JMVAE, JOINT_ATTRIBUTE, JointEncoderConfig
from omnivae.models.registry import register_model
from omnivae.priors.flow import build_zuko


class JNFConfig(JointEncoderConfig):
    model: Literal["jnf"] = "jnf"
    # epochs of the first phase (joint encoder and decoders train); then they freeze. About 70% of
    # the run: on shapes medium at 25 epochs, 10 gave caption->image 0.86 and 18 gave 1.00. Runs
    # (train_run) set it to 70% of train.max_epochs, at most 18, unless given (JNF.run_defaults)
    warmup: PositiveInt = 18
    unimodal_in_warmup: bool = True  # train the unimodal encoders and flows during the warm-up too
    flow_transforms: PositiveInt = 2  # autoregressive transforms in each modality's flow
    flow_hidden: list[PositiveInt] = [64, 64]  # hidden widths of each transform's network


class JNF(JMVAE):
    about = "joint multimodal VAE with normalising-flow unimodal posteriors"
    paper = ("Senellart et al. 2023, Improving multimodal joint variational autoencoders through "
             "normalizing flows and correlation analysis")
    config_class = JNFConfig

    @classmethod
    def run_defaults(cls, train) -> dict:
        """The warm-up at 70% of the run (at least 1, at most 18 epochs), so the unimodal phase gets
        the rest: the fixed 18 left a 20-epoch run 2 epochs of it and a 6-epoch run none. The cap is
        measured: on shapes-partial at 40 epochs a warm-up of 28 gave caption->image 0.76 where 18
        gave 0.83 (on shapes medium at 25, 18 gave 1.00 where 10 gave 0.86)."""
        return {"model": {"warmup": min(18, max(1, round(0.7 * train.max_epochs)))}}

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        d, t, hidden = config.latent_dim, config.flow_transforms, config.flow_hidden
        self.flows = nn.ModuleDict({n: build_zuko(
            lambda: zuko.flows.MAF(features=d, transforms=t, hidden_features=tuple(hidden)).transform,
            d, 0, t, hidden, 2) for n in self.names})
        self.joint_frozen = False  # the second phase (set by on_train_epoch_start)

    def check_config(self) -> None:
        if len(self.names) < 2:
            raise ConfigError(f"model 'jnf' needs at least two modalities, got {self.names}; use vae for one")

    def on_train_epoch_start(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.joint_frozen = epoch >= self.config.warmup

    def adversarial_problem(self, name: str) -> str | None:
        return "jnf freezes its decoders after the warm-up, and an adversarial term would keep training them"

    # -- the unimodal flow posteriors ------------------------------------------------------------
    def unimodal_log_prob(self, i: int, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """log q_i(z|x_i) [...,B] for codes z [...,B,D] and modality i's base Gaussian mu, logvar [B,D]."""
        u, ladj = self.flows[self.names[i]]().call_and_ladj(z)
        return log_normal(u, mu, logvar) + ladj

    def unimodal_sample(self, i: int, mu: torch.Tensor, logvar: torch.Tensor, n: int) -> torch.Tensor:
        """n draws [n,B,D] from q_i(z|x_i)."""
        u = Gaussian(mu, logvar).rsample(n)
        return self.flows[self.names[i]]().inv(u)

    def with_joint(self, mu: torch.Tensor, present: torch.Tensor, fallback: torch.Tensor, joint: torch.Tensor):
        """`joint` [...,B,D] on the complete rows where q(z|X) rides on mu (JMVAE.encode_unimodal), else `fallback`."""
        if getattr(mu, JOINT_ATTRIBUTE, None) is None:
            return fallback
        return torch.where(present.all(0).unsqueeze(-1), joint, fallback)

    def fuse(self, mu, logvar, present) -> Gaussian:
        means = torch.stack([self.flows[n]().inv(mu[i]) for i, n in enumerate(self.names)])  # [M,B,D]
        summary = moment_matched_mixture(means, logvar, present)
        joint = getattr(mu, JOINT_ATTRIBUTE, None)
        if joint is None:
            return summary
        return Gaussian(self.with_joint(mu, present, summary.mu, joint.mu),
                        self.with_joint(mu, present, summary.logvar, joint.logvar))

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        m, b, d = mu.shape
        samples = torch.stack([self.unimodal_sample(i, mu[i], logvar[i], n) for i in range(m)])  # [M,n,B,D]
        weights = present.T.to(mu.dtype)  # [B,M]
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
        pick = torch.multinomial(weights, n, replacement=True).T  # [n,B]: one given modality per draw
        z = samples.gather(0, pick.view(1, n, b, 1).expand(1, n, b, d))[0]
        z = torch.where(present.any(0).view(1, b, 1), z, torch.randn_like(z))  # nothing given: the prior
        joint = getattr(mu, JOINT_ATTRIBUTE, None)
        return z if joint is None else self.with_joint(mu, present, z, joint.rsample(n))

    # -- the objective ---------------------------------------------------------------------------
    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        mu, logvar, present = MultimodalModel.encode_unimodal(self, batch)  # the base Gaussians only
        complete = present.all(0)  # [B]
        with torch.no_grad() if self.joint_frozen else nullcontext():
            q = self.joint_posterior(batch)
            z = q.rsample(1)  # [1,B,D]
            rec = torch.stack(list(self.log_likelihoods(z, batch).values())).sum(0)[0]  # [B]
            kl = q.kl_standard()
        train_unimodal = self.joint_frozen or self.config.unimodal_in_warmup
        with nullcontext() if train_unimodal else torch.no_grad():
            nll = -sum(self.unimodal_log_prob(i, z[0].detach(), mu[i], logvar[i]) for i in range(len(self.names)))
        rec_mean, kl_mean, nll_mean = (masked_mean(v, complete) for v in (rec, kl, nll))
        total = -(rec_mean - self.config.beta * beta_scale * kl_mean) + nll_mean
        return LossOutput(total, {"loss": total.detach(), "rec": rec_mean.detach(), "kl": kl_mean.detach(),
                                  "nll_unimodal": nll_mean.detach(),
                                  "complete": complete.to(rec.dtype).mean().detach()})


register_model("jnf", JNF)
