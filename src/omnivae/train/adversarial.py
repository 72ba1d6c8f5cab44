"""Adversarial sharpening in training: OmniModule plus a PatchGAN discriminator on one image
modality (train.adversarial_weight > 0; design and limits in docs/priors.md).

Each training step, under Lightning's manual optimisation:
1. fakes: `adversarial_images` decodes, with gradients, one posterior draw per example (a
   reconstruction, or a cross-modal generation where the image is missing) and as many codes
   from N(0, I); reals are the batch's present images;
2. discriminator update: discriminator_hinge(D(real), D(fake.detach())) with its own Adam
   (adversarial_lr, betas 0.5/0.9). This step is not counted in global_step, so KL warm-up,
   max_steps, log_every_n_steps and checkpoint_every_n_steps count batches as without it;
3. model update: model objective + w * generator_hinge(D(fake)) against the updated D (whose
   weights are frozen for it), w = adversarial_weight, ramped from 0 over
   adversarial_warmup_epochs. While w is 0 the fakes are decoded without a graph.

Both updates pass OmniModule's guard (on_before_optimizer_step: a non-finite loss or gradient
stops the run naming the step, or with on_nonfinite: skip drops that update), then are clipped
to grad_clip, each optimiser's gradients by their own norm (the Trainer cannot clip under
manual optimisation, so fit builds it without gradient_clip_val). The discriminator is a
submodule of the LightningModule: its weights (and spectral-norm vectors) are in the
checkpoint's state_dict and its Adam state in optimizer_states, so a resumed run continues
exactly; the saved model folder (io.save_model) holds the VAE only.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from omnivae.adversarial import PatchDiscriminator, adversarial_images, discriminator_hinge, generator_hinge
from omnivae.batch import Batch
from omnivae.errors import ConfigError, TrainingError
from omnivae.models.base import MultimodalModel
from omnivae.train.config import TrainConfig
from omnivae.train.module import ADVICE, OmniModule


def adversarial_modality(model: MultimodalModel, config: TrainConfig) -> str:
    """The image modality train.adversarial_* applies to (adversarial_modality, else the model's
    first image modality that model.adversarial_problem allows); ConfigError if it does not
    exist, is not an image, or the model rules the term out for it."""
    kinds = {n: model.modalities[n].kind for n in model.names}
    name = config.adversarial_modality
    if name is None:
        images = [n for n in model.names if model.modalities[n].adversarial]
        if not images:
            raise ConfigError(f"train.adversarial_weight > 0 sharpens an image modality, but the model has none "
                              f"(modalities: {kinds}); set adversarial_weight: 0")
        allowed = [n for n in images if model.adversarial_problem(n) is None]
        name = (allowed or images)[0]
    elif name not in kinds:
        raise ConfigError(f"train.adversarial_modality {name!r} is not a modality of the model; "
                          f"it has {model.names}")
    elif not model.modalities[name].adversarial:
        raise ConfigError(f"train.adversarial_modality {name!r} is {kinds[name]!r}; the discriminator needs "
                          f"an image modality")
    problem = model.adversarial_problem(name)
    if problem is not None:
        raise ConfigError(f"train.adversarial_weight > 0 cannot sharpen {name!r}: {problem}")
    shape = list(model.modalities[name].spec.shape)
    depth = len(config.adversarial_channels)
    if min(shape[1:]) < 2 ** depth:
        raise ConfigError(f"train.adversarial_channels {config.adversarial_channels}: {depth} stride-2 layers "
                          f"need images of at least {2 ** depth} pixels a side; {name!r} is {shape}")
    return name


def select_module(model: MultimodalModel, config: TrainConfig) -> type[OmniModule] | None:
    """AdversarialModule when train.adversarial_weight > 0 (the model is checked first), else None
    (the caller's plain module)."""
    if config.adversarial_weight > 0:
        adversarial_modality(model, config)
        return AdversarialModule
    return None


@contextmanager
def frozen(module: torch.nn.Module):
    """No gradients for `module`'s parameters inside the block (the generator term must not
    train the discriminator); requires_grad comes back afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _no_closure() -> None:
    return None


class AdversarialModule(OmniModule):
    def __init__(self, model: MultimodalModel, config: TrainConfig, steps_per_epoch: int = 1):
        super().__init__(model, config, steps_per_epoch)
        self.automatic_optimization = False
        self.image = adversarial_modality(model, config)
        channels = int(model.modalities[self.image].spec.shape[0])
        self.discriminator = PatchDiscriminator(channels, list(config.adversarial_channels))
        self.adversarial_warmup_steps = max(0, round(config.adversarial_warmup_epochs * steps_per_epoch))

    def adversarial_scale(self) -> float:
        """The generator term's weight relative to adversarial_weight: 0 -> 1 over the warm-up."""
        if self.adversarial_warmup_steps == 0:
            return 1.0
        return min(1.0, self.global_step / self.adversarial_warmup_steps)

    def _loss_problem(self, problem: str) -> None:
        """A non-finite loss before an update: stop now, or leave it to the guard before the
        optimiser step (which drops the update, or with several processes decides for all)."""
        if not self._distributed() and self.cfg.on_nonfinite == "stop":
            raise TrainingError(f"{problem}. {ADVICE}")
        self._bad_loss = problem

    def training_step(self, batch: Batch, batch_idx: int):
        vae_opt, disc_opt = self.optimizers()
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        self._bad_loss = None
        beta = self.beta_scale()
        if self.cfg.compile and self.warmup_steps:  # as OmniModule: a changing float would retrace
            beta = torch.tensor(beta, device=self.device)
        batch = self.augmented(batch)  # the discriminator sees the augmented real images too
        out = self.penalized(self._objective(batch, beta))
        weight = self.cfg.adversarial_weight * self.adversarial_scale()
        with torch.set_grad_enabled(weight > 0):  # during the warm-up only the discriminator uses the fakes
            fake, real = adversarial_images(self.model, batch, self.image)

        # 1. the discriminator: present real images against detached fakes
        logits = self.discriminator(torch.cat([real, fake.detach()]))
        real_logits, fake_logits = logits[:len(real)], logits[len(real):]
        d_loss = discriminator_hinge(real_logits, fake_logits)
        d_finite = bool(torch.isfinite(d_loss))
        if not d_finite:
            self._loss_problem(f"non-finite discriminator loss at {where}; bad terms: ['d_loss']")
        self.manual_backward(d_loss)
        # through the strategy (precision plugin, the guard and clipping in on_before_optimizer_step)
        # but not through LightningOptimizer.step, which would count a second step per batch
        self.trainer.strategy.optimizer_step(disc_opt.optimizer, _no_closure, model=self)
        disc_opt.zero_grad()

        # 2. the model: its objective plus the generator term against the updated discriminator
        if weight > 0:
            with frozen(self.discriminator):
                g_adv = generator_hinge(self.discriminator(fake))
            total = out.total + weight * g_adv
        else:  # logged only: the term against the discriminator before its update
            g_adv, total = generator_hinge(fake_logits.detach()), out.total
        finite = bool(torch.isfinite(total))
        if not finite:
            bad = [k for k, v in out.terms.items() if not torch.isfinite(v).all()]
            bad += ["g_adv"] if weight > 0 and not torch.isfinite(g_adv) else []
            self._loss_problem(f"non-finite loss at {where}; bad terms: {bad or ['loss']}")
        self.manual_backward(total)
        vae_opt.step()  # counted: global_step advances once per batch
        vae_opt.zero_grad()
        if finite and d_finite:
            self._accumulate({**out.terms, "g_adv": g_adv.detach(), "d_loss": d_loss.detach()}, len(batch))
        return out.total

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)  # the guard: stop, or skip (every gradient set to None)
        if self.cfg.grad_clip:  # the Trainer does not clip under manual optimisation
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self):
        vae = super().configure_optimizers()
        fused = vae.defaults.get("fused") is True  # the same choice as for the model's parameters
        disc = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.adversarial_lr, betas=(0.5, 0.9),
                                **({"fused": True} if fused else {}))
        return [vae, disc]
