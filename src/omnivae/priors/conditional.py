"""A learned conditional prior for generation: a normalising flow p(code | given modalities),
fitted after training (the second stage of "learn latents, then generate").

Why: a caption that leaves part of the image open ("a red square", position unsaid) gives a
unimodal posterior whose mean decodes to the average of the open choices: four faint blobs.
The flow instead learns the distribution of the *joint* codes (every modality encoded) given
what is known, so each draw lands on one complete code the decoders were trained on: one sharp
square at one of the four positions, a different one per draw.

    code    = model.full_code(all modalities of a training example)      [B,T]
    context = [mu_m * present_m, present_m] for each modality m          [B,M*(W+1)]
    fit:  maximise log p_flow(code | context) with random subsets of the present modalities
          as context (the empty subset too, so the flow is also a learned joint prior)
    use:  model.generate(...) draws codes from the flow (sampler="conditional")

The flow is zuko's neural spline flow; its weights live in the model's safetensors file and its
options in the model config (`conditional_prior:`), so a saved model rebuilds it without code.
"""
from __future__ import annotations

import math
import time

import torch
from pydantic import Field
from torch import nn

from omnivae.config import PositiveInt, StrictModel
from omnivae.errors import InputError
from omnivae.priors.flow import build_zuko


class ConditionalPriorConfig(StrictModel):
    """`conditional_prior: {transforms: 3, hidden: [256, 256], steps: 3000}` in a model config."""

    kind: str = Field(default="flow", pattern="^flow$")
    transforms: PositiveInt = 3  # autoregressive spline transforms
    hidden: list[PositiveInt] = Field(default=[256, 256], min_length=1)  # widths of each transform's network
    bins: PositiveInt = 8  # spline bins
    # optimisation steps of the fit; None: as many as the run trained for (a run passes its
    # optimiser steps, so the fit's cost follows training's), or 60 passes over the codes when
    # fitted without a step count; at least 100 and at most 1500 (about 20 ms a step on a 2-core CPU)
    steps: PositiveInt | None = None
    batch_size: PositiveInt = 128
    lr: float = Field(default=5e-3, gt=0)
    keep_probability: float = Field(default=0.5, gt=0, le=1)  # each present modality is given w.p. this in the fit
    # the base noise's scale when generation does not set one (latent_temperature=None): below 1
    # the draws keep to the likelier codes. 0.7 against 1.0, one run each: PolyMNIST-5 MoPoE mean
    # cross coherence 0.763 -> 0.836, shapes-partial MoPoE caption->image 0.870 -> 0.890 with 3.85
    # of 4 open positions per 20 draws (3.92 at 1.0), shapes-medium MHVAE 0.934 -> 0.956 (docs/generation.md)
    temperature: float = Field(default=0.7, gt=0, allow_inf_nan=False)
    # draws per generated caption or class (kinds that vote, Modality.agreed): the decode that the
    # draws together find likeliest, not one draw's; 1: one draw. MNIST captions MoPoE image->caption,
    # 1,000 test digits, one model: 0.916 with 1 draw, 0.958 / 0.964 / 0.972 with 8 / 16 / 32, whose
    # cost grows as the square (5 / 12 / 33 s for 500 captions on one core); the price is captions
    # that name less (a thickness on 0.11 of them with 16, 0.39 with 1, real 0.36; docs/generation.md)
    consensus: PositiveInt = 16


MIN_STEPS, MAX_STEPS = 100, 1500


def default_steps(num_codes: int, batch_size: int, training_steps: int | None = None) -> int:
    """The fit's steps when the config leaves them unset: the model's training steps if given,
    else 60 passes over the codes; at least MIN_STEPS, at most MAX_STEPS. On mnist-label (MoPoE,
    3 epochs, 564 steps) this matched the coherence of the former 1,500 steps at batch 512 in a
    sixth of the time (docs/generation.md)."""
    wanted = training_steps if training_steps else math.ceil(60 * num_codes / batch_size)
    return min(MAX_STEPS, max(MIN_STEPS, wanted))


class ConditionalFlowPrior(nn.Module):
    """p(code [T] | context [M*(W+1)]) as a conditional neural spline flow over standardised codes."""

    def __init__(self, code_dim: int, num_modalities: int, width: int, config: ConditionalPriorConfig):
        super().__init__()
        import zuko

        self.config, self.code_dim, self.num_modalities, self.width = config, code_dim, num_modalities, width
        context = num_modalities * (width + 1)
        self.flow = build_zuko(lambda: zuko.flows.NSF(features=code_dim, context=context,
                                                      transforms=config.transforms, bins=config.bins,
                                                      hidden_features=tuple(config.hidden)),
                               code_dim, context, config.transforms, config.hidden, 3 * config.bins - 1)
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_std", torch.ones(code_dim))
        self.register_buffer("fitted", torch.tensor(False))
        self.requires_grad_(False)  # trained only by fit, never by the model's own optimiser
        self.last_fit: dict[str, float] = {}  # the last fit's steps, batch size and seconds in its steps

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def context(self, mu: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Unimodal means [M,B,W] and presence [M,B] -> context rows [B, M*(W+1)]."""
        p = present.to(mu.dtype).unsqueeze(-1)
        return torch.cat([mu * p, p], -1).transpose(0, 1).reshape(mu.shape[1], -1)

    def log_prob(self, code: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """log p(code | context) [B] in the code's own units (standardisation included)."""
        u = (code - self.code_mean) / self.code_std
        return self.flow(context).log_prob(u) - self.code_std.log().sum()

    def sample(self, context: torch.Tensor, n: int, temperature: float | None = None) -> torch.Tensor:
        """n codes per context row -> [n,B,T]; temperature scales the base noise (1: the fitted law;
        None: the config's `temperature`)."""
        temperature = self.config.temperature if temperature is None else temperature
        dist = self.flow(context)
        eps = torch.randn(n, *dist.base.batch_shape, self.code_dim, device=context.device) * temperature
        u = dist.transform.inv(eps)
        return u * self.code_std + self.code_mean

    def fit(self, code: torch.Tensor, mu: torch.Tensor, present: torch.Tensor, seed: int = 0,
            log_every: int = 0, training_steps: int | None = None) -> list[float]:
        """Maximum likelihood on codes [N,T] with unimodal means [M,N,W] and presence [M,N];
        each step gives the flow a random subset of every example's present modalities.
        training_steps: the model's optimiser steps, which set the fit's steps when the config
        leaves them unset (default_steps)."""
        cfg = self.config
        if code.dim() != 2 or code.shape[1] != self.code_dim or len(code) != mu.shape[1]:
            raise InputError(f"conditional prior fit: codes {list(code.shape)} do not match "
                             f"[{mu.shape[1]}, {self.code_dim}]")
        if len(code) < 2:
            raise InputError("conditional prior fit needs at least 2 training examples")
        if not torch.isfinite(code).all() or not torch.isfinite(mu).all():
            raise InputError("conditional prior fit: the encoded training data holds NaN or infinite values")
        self.code_mean.copy_(code.mean(0))
        self.code_std.copy_(code.std(0).clamp_min(1e-3))
        gen = torch.Generator().manual_seed(seed)
        steps = cfg.steps or default_steps(len(code), cfg.batch_size, training_steps)
        self.requires_grad_(True)
        self.train()
        opt = torch.optim.Adam(self.flow.parameters(), lr=cfg.lr, fused=True)  # fit runs on the CPU
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        losses, start = [], time.perf_counter()
        try:
            for step in range(steps):
                idx = torch.randint(len(code), (min(cfg.batch_size, len(code)),), generator=gen)
                keep = torch.rand(self.num_modalities, len(idx), generator=gen) < cfg.keep_probability
                given = present[:, idx] & keep
                ctx = self.context(mu[:, idx], given)
                loss = -self.log_prob(code[idx], ctx).mean() / self.code_dim
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), 5.0)
                opt.step()
                sched.step()
                if log_every and step % log_every == 0:  # a host sync only on logging steps
                    losses.append(float(loss.detach()))
        finally:
            self.requires_grad_(False)
            self.eval()
        self.fitted.fill_(True)
        self.last_fit = {"steps": steps, "batch_size": min(cfg.batch_size, len(code)),
                         "steps_s": round(time.perf_counter() - start, 3)}
        return losses


@torch.no_grad()
def encode_for_prior(model, data, batch_size: int = 512):
    """Full codes [N,T] of the examples with every modality present, their unimodal means [M,N,W]
    and presence [M,N] (all True), from TensorData."""
    complete = torch.stack([data.mask[n] for n in model.names]).all(0).nonzero().squeeze(1)
    if len(complete) < 2:
        raise InputError(f"the conditional prior is fitted on examples with every modality present; "
                         f"the training data has {len(complete)}")
    was_training, dev = model.training, model.device
    model.eval()
    codes, mus, presents = [], [], []
    try:
        for idx in complete.split(batch_size):
            b = data.batch(idx).to(dev)
            mu, logvar, present = model.encode_unimodal(b)
            codes.append(model.full_code(mu, logvar, present).cpu())
            mus.append(mu.cpu()), presents.append(present.cpu())
    finally:
        model.train(was_training)
    return torch.cat(codes), torch.cat(mus, 1), torch.cat(presents, 1)


def fit_conditional_prior(model, data, seed: int = 0, training_steps: int | None = None) -> ConditionalFlowPrior:
    """Fit the model's conditional prior (built from model.config.conditional_prior) on training
    data (RawData or TensorData); generation then draws from it by default. training_steps (the
    model's optimiser steps; a run passes them) sets the fit's length unless the config does."""
    from omnivae.data.raw import RawData
    from omnivae.data.tensors import TensorData

    if getattr(model, "conditional_prior", None) is None:
        raise InputError(f"model {model.config.model!r} has no conditional prior: set "
                         "model.conditional_prior (e.g. {}) in its config")
    if isinstance(data, RawData):
        data = TensorData.from_raw(model, data)
    code, mu, present = encode_for_prior(model, data)
    prior = model.conditional_prior
    prior.to("cpu")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        prior.fit(code, mu, present, seed=seed, training_steps=training_steps)
    prior.to(model.device)
    return prior
