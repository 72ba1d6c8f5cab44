"""The LightningModule: the model's objective, KL warm-up, logging and optimisers."""
from __future__ import annotations

import lightning as L
import torch

from omnivae.batch import Batch
from omnivae.errors import TrainingError
from omnivae.models.base import MultimodalModel
from omnivae.train.config import TrainConfig


class OmniModule(L.LightningModule):
    def __init__(self, model: MultimodalModel, config: TrainConfig, steps_per_epoch: int = 1):
        super().__init__()
        self.model, self.cfg = model, config
        self.warmup_steps = max(0, round(config.kl_warmup_epochs * steps_per_epoch))
        self.skipped = 0

    def beta_scale(self) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, self.global_step / self.warmup_steps)

    def on_train_epoch_start(self) -> None:
        self.model.on_train_epoch_start(self.current_epoch)

    def training_step(self, batch: Batch, batch_idx: int):
        out = self.model.loss(batch, self.beta_scale())
        if not torch.isfinite(out.total):
            bad = [k for k, v in out.terms.items() if not torch.isfinite(v).all()]
            message = (f"non-finite loss at step {self.global_step} (epoch {self.current_epoch}, "
                       f"batch {batch_idx}); bad terms: {bad or ['loss']}")
            if self.cfg.on_nonfinite == "skip":
                self.skipped += 1
                self.print(f"skipping batch: {message}")
                return None
            raise TrainingError(message + ". The last good checkpoint is kept; lower the learning "
                                "rate, enable grad_clip, or set on_nonfinite: skip")
        self.log_dict({f"train/{k}": v for k, v in out.terms.items()}, on_step=True, on_epoch=True,
                      batch_size=len(batch), prog_bar=False)
        self.log("beta_scale", self.beta_scale(), on_step=True, on_epoch=False, batch_size=len(batch))
        return out.total

    def validation_step(self, batch: Batch, batch_idx: int):
        out = self.model.loss(batch, 1.0)
        self.log_dict({f"val/{k}": v for k, v in out.terms.items()}, on_step=False, on_epoch=True,
                      batch_size=len(batch), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
