"""The LightningModule: the model's objective, KL warm-up, logging, optimisers, and the
guard against non-finite numbers.

A non-finite loss (checked in training_step) or gradient (checked after backward, before
clipping and the optimiser step) either stops the run with a TrainingError naming the step
and the loss term or parameter, or, with on_nonfinite: skip, drops the update: every
gradient is set to None, so the optimiser leaves weights and its own state unchanged.
With several processes the decision is shared, so all of them skip or stop together.
"""
from __future__ import annotations

import lightning as L
import torch

from omnivae.batch import Batch, LossOutput
from omnivae.errors import ConfigError, TrainingError
from omnivae.models.base import MultimodalModel
from omnivae.train.augment import augment_batch
from omnivae.train.config import TrainConfig
from omnivae.train.penalties import l1_penalty, penalized_weights

ADVICE = ("The last good checkpoint is kept; lower the learning rate, enable grad_clip, check the "
          "data for extreme values, or set on_nonfinite: skip")


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True if no tensor holds a NaN or an infinity: one fused kernel over the whole list
    (the one GradScaler uses, here with a scale of exactly 1) and a single host read."""
    found = torch.zeros(1, device=tensors[0].device)
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, torch.ones(1, device=found.device))
    except (RuntimeError, NotImplementedError):  # a device or dtype the kernel lacks
        return all(bool(torch.isfinite(t).all()) for t in tensors)
    return not bool(found)


class OmniModule(L.LightningModule):
    def __init__(self, model: MultimodalModel, config: TrainConfig, steps_per_epoch: int = 1):
        super().__init__()
        self.model, self.cfg = model, config
        self.warmup_steps = max(0, round(config.kl_warmup_epochs * steps_per_epoch))
        self.skipped = 0  # updates dropped because of non-finite numbers (saved in checkpoints)
        self._bad_loss: str | None = None  # set by training_step, read before the optimiser step
        self._model_epoch: int | None = None
        self._log_step = 0  # the logger step of the current batch (set in on_train_batch_start)
        # epoch sums of the loss terms, weighted by batch size: tensors on the device, so a
        # step adds to them without a host sync or a call into Lightning's logging machinery
        self._named_parameters: list | None = None  # filled on first use (after any device move)
        self._l1_weights: list | None = None  # the weights the L1 penalty sums (on first use)
        self._sums: dict[tuple[str, ...], torch.Tensor] = {}  # term names -> their stacked sums
        self._epoch_count = 0
        # torch.compile traces the objective on first use (and once more for a differently
        # sized last batch); the module and its state_dict stay the plain nn.Module
        self._objective = torch.compile(model.loss, dynamic=False) if config.compile else model.loss

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets plain attributes (e.g. _current_fx_name) around every hook call, and
        # nn.Module.__setattr__ checks parameters, submodules and buffers first: about 50 times
        # a step. A name already in __dict__ is none of those, so a plain value can go straight in.
        if name in self.__dict__ and not isinstance(value, (torch.Tensor, torch.nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Move a Batch tensor by tensor. Lightning's generic mover walks (and deep-copies)
        dataclasses; for a batch already on the device this is a no-op."""
        if isinstance(batch, Batch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def beta_scale(self) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, self.global_step / self.warmup_steps)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # the logger step of this batch: optimiser steps so far, one a batch (counted before
        # the step; a manual-optimisation module steps inside training_step)
        self._log_step = self.global_step
        # here rather than on_train_epoch_start, which Lightning skips after a mid-epoch resume
        if self._model_epoch != self.current_epoch:
            self._model_epoch = self.current_epoch
            self.model.on_train_epoch_start(self.current_epoch)

    def _distributed(self) -> bool:
        return self.trainer.world_size > 1  # only called from hooks the trainer runs

    def augmented(self, batch: Batch) -> Batch:
        """The training batch with its images augmented (train.augment); validation never comes here."""
        return augment_batch(self.model, batch, self.cfg.augment) if self.cfg.augment.active else batch

    def penalized(self, out: LossOutput) -> LossOutput:
        """The objective plus the L1 weight penalty (train.l1_weight), logged as the term "l1";
        the term "loss" stays the model's objective, comparable with val/loss."""
        if not self.cfg.l1_weight:
            return out
        if self._l1_weights is None:
            self._l1_weights = penalized_weights(self.model)
        l1 = self.cfg.l1_weight * l1_penalty(self._l1_weights)
        return LossOutput(out.total + l1, {**out.terms, "l1": l1.detach()})

    def training_step(self, batch: Batch, batch_idx: int):
        self._bad_loss = None
        beta = self.beta_scale()
        if self.cfg.compile and self.warmup_steps:  # a changing Python float would retrace every step
            beta = torch.tensor(beta, device=self.device)
        batch = self.augmented(batch)
        out = self.penalized(self._objective(batch, beta))
        if not torch.isfinite(out.total):
            bad = [k for k, v in out.terms.items() if not torch.isfinite(v).all()]
            problem = (f"non-finite loss at step {self.global_step} (epoch {self.current_epoch}, "
                       f"batch {batch_idx}); bad terms: {bad or ['loss']}")
            if not self._distributed():
                if self.cfg.on_nonfinite == "stop":
                    raise TrainingError(f"{problem}. {ADVICE}")
                self._skip(problem)
                return None  # Lightning then runs no backward and no optimiser step
            # several processes: backward must still run everywhere (gradients are averaged);
            # the shared check before the optimiser step stops or skips on every process
            self._bad_loss = problem
            return out.total
        self._accumulate(out.terms, len(batch))
        return out.total

    def _accumulate(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """Add a step's loss terms to the epoch sums; write them to the loggers only on logging
        steps (_is_logging_step). Lightning's self.log costs about a millisecond per call on a
        CPU, and whatever it holds is re-read after every batch."""
        names = tuple(terms)
        values = torch.stack(list(terms.values())).detach()  # one stack and one add a step
        if names in self._sums:
            self._sums[names].add_(values, alpha=batch_size)
        else:
            self._sums[names] = values * batch_size
        self._epoch_count += batch_size
        if self._is_logging_step():
            # step values stay local (no per-step communication); converted to numbers here only
            step = {f"train/{k}_step": v for k, v in zip(names, values.tolist())}
            self._log_steps({**step, "beta_scale": float(self.beta_scale())})

    def _is_logging_step(self) -> bool:
        """Lightning's rule for on_step values: every log_every_n_steps batches (batch i logs when
        (i + 1) % n == 0), and on the batch where training is asked to stop."""
        if not self.loggers:  # also: no trainer attached
            return False
        every = self.trainer.log_every_n_steps
        return bool(every) and ((self._log_step + 1) % every == 0 or self.trainer.should_stop)

    def _log_steps(self, metrics: dict[str, float]) -> None:
        """One row to every logger through the public Logger API, as self.log would write it: at
        the batch's step, with an epoch column."""
        row = {**metrics, "epoch": self.current_epoch}
        for logger in self.loggers:
            logger.log_metrics(row, step=self._log_step)
            logger.save()

    @property
    def _epoch_sums(self) -> dict[str, torch.Tensor]:
        """The epoch's batch-size-weighted sums by term name."""
        out: dict[str, torch.Tensor] = {}
        for names, values in self._sums.items():
            for name, value in zip(names, values):
                out[name] = out[name] + value if name in out else value
        return out

    def on_train_epoch_end(self) -> None:
        # epoch means are averaged over processes, so every process monitors (and
        # checkpoints on) the same train/loss_epoch; runs before the checkpoint callbacks
        if self._epoch_count:
            means = {f"train/{k}_epoch": s / self._epoch_count for k, s in self._epoch_sums.items()}
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)
        self._sums, self._epoch_count = {}, 0

    def on_before_optimizer_step(self, optimizer) -> None:
        problem, self._bad_loss = self._bad_loss, None
        if problem is None and not self._scaled_gradients():
            problem = self._bad_gradient()
        if self._distributed():
            flag = torch.tensor(0.0 if problem is None else 1.0, device=self.device)
            if float(self.trainer.strategy.reduce(flag, reduce_op="sum")) > 0 and problem is None:
                problem = f"non-finite loss or gradient in another process at step {self.global_step}"
        if problem is None:
            return
        if self.cfg.on_nonfinite == "stop":
            raise TrainingError(f"{problem}. {ADVICE}")
        for p in self.parameters():
            p.grad = None  # optimisers skip parameters without a gradient: no update at all
        self._skip(problem)

    def _bad_gradient(self) -> str | None:
        if self._named_parameters is None:  # walking the module tree every step costs more than the check
            self._named_parameters = list(self.named_parameters())
        named = [(n, p.grad) for n, p in self._named_parameters if p.grad is not None]
        if not named or all_finite([g for _, g in named]):
            return None
        name = next(n for n, g in named if not bool(torch.isfinite(g).all()))
        return (f"non-finite gradient at step {self.global_step} (epoch {self.current_epoch}) in "
                f"parameter {name.removeprefix('model.')!r}")

    def _scaled_gradients(self) -> bool:
        """fp16 training: the GradScaler itself skips steps with inf gradients."""
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def _skip(self, message: str) -> None:
        self.skipped += 1
        self.print(f"skipping update ({self.skipped} so far): {message}")

    def validation_step(self, batch: Batch, batch_idx: int):
        # a fixed noise stream per batch: val/loss is comparable across epochs, and validation
        # does not shift the training RNG (so resumed runs draw what uninterrupted ones draw)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed = (self.cfg.seed * 7919 + batch_idx) % 2**63
            torch.random.default_generator.manual_seed(seed)
            if devices:
                torch.cuda.manual_seed(seed)
            out = self.model.loss(batch, 1.0)
        self.log_dict({f"val/{k}": v for k, v in out.terms.items()}, on_step=False, on_epoch=True,
                      batch_size=len(batch), prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the epoch sums too: a run resumed mid-epoch reports the same epoch means
        checkpoint["omnivae"] = {"skipped": int(self.skipped), "epoch_count": int(self._epoch_count),
                                 "epoch_sums": {k: v.detach().cpu() for k, v in self._epoch_sums.items()}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._check_state_names(set(checkpoint.get("state_dict", {})))
        saved = checkpoint.get("omnivae", {})
        self.skipped = int(saved.get("skipped", 0))
        self._epoch_count = int(saved.get("epoch_count", 0))
        sums = saved.get("epoch_sums", {})
        self._sums = {tuple(sums): torch.stack(list(sums.values())).to(self.device)} if sums else {}

    def _check_state_names(self, saved: set[str]) -> None:
        """A checkpoint must hold this module's weights, no more and no fewer: say what differs
        (Lightning's own error is a bare list of keys)."""
        own = set(self.state_dict())
        if not saved or saved == own:
            return
        extra, missing = sorted(saved - own), sorted(own - saved)
        if any(k.startswith("discriminator.") for k in extra):
            raise ConfigError("this checkpoint was trained with an adversarial term (train.adversarial_weight > 0); "
                              "resume it with the same adversarial_weight, or start a new run without it")
        if any(k.startswith("discriminator.") for k in missing):
            raise ConfigError("this checkpoint was trained without an adversarial term (adversarial_weight 0); "
                              "resume it with the same train config, or start a new run")
        raise ConfigError(f"this checkpoint does not fit the model: unexpected weights {extra[:5]}, "
                          f"missing weights {missing[:5]}")

    def configure_optimizers(self):
        params = list(self.model.parameters())
        # the fused kernel updates every parameter in one call (CPU and CUDA): on small models
        # the per-tensor Python loop of the default implementation is a large part of a step
        # Lightning's mixed-precision plugin refuses gradient clipping with a fused optimiser
        # (it assumes the optimiser unscales gradients itself), so mixed precision keeps the default
        fused = (self.cfg.fused_optimizer and "mixed" not in str(self.cfg.precision)
                 and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params))
        return torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                **({"fused": True} if fused else {}))
