"""CollapseMonitor: posterior-collapse numbers logged at the end of validation.

On a fixed slice of the validation data (its first `n` examples) it logs
  collapse/active_units        latent dims of the joint posterior whose mean varies (> 0.01)
  collapse/mi                  I(x; z) estimate in nats (He et al. 2019), at most log n
  collapse/distinct_captions   for text models: share of distinct greedy captions decoded
                               from the slice's posterior means (1/n = decoder ignores z)
and, with several modalities, collapse/active_units/<name> for each unimodal posterior.
Noise for the MI estimate comes from a private generator, so training draws stay the same.
"""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from omnivae.batch import Batch
from omnivae.metrics.collapse import active_units, mutual_information, output_diversity


class CollapseMonitor(Callback):
    def __init__(self, every_n_epochs: int = 1, n: int = 512, threshold: float = 0.01, seed: int = 0):
        if every_n_epochs < 1 or n < 2:
            raise ValueError(f"CollapseMonitor needs every_n_epochs >= 1 and n >= 2, got {every_n_epochs}, {n}")
        self.every_n_epochs, self.n, self.threshold, self.seed = every_n_epochs, n, threshold, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        batch = self._slice(trainer)
        if batch is None or len(batch) < 2:
            return
        for key, value in self.measure(pl_module.model, batch).items():
            pl_module.log(key, value, on_step=False, on_epoch=True, batch_size=len(batch), sync_dist=True)

    @torch.no_grad()
    def measure(self, model, batch: Batch) -> dict[str, float]:
        """The logged numbers for one batch (the model's own train/eval mode is kept)."""
        batch = Batch({k: v.to(model.device) for k, v in batch.data.items()},
                      {k: m.to(model.device) for k, m in batch.mask.items()})
        mu, logvar, present = model.encode_unimodal(batch)
        joint = model.fuse(mu, logvar, present)
        gen = torch.Generator().manual_seed(self.seed)
        out = {"collapse/active_units": float(active_units(joint.mu, self.threshold)),
               "collapse/mi": mutual_information(joint.mu, joint.logvar, generator=gen)}
        if len(model.names) > 1:
            for i, name in enumerate(model.names):
                rows = present[i]
                if int(rows.sum()) >= 2:
                    out[f"collapse/active_units/{name}"] = float(active_units(mu[i][rows], self.threshold))
        found = {name: output_diversity(model, name, joint.mu) for name in model.names}
        found = {name: metrics for name, metrics in found.items() if metrics}
        for name, metrics in found.items():  # "collapse/distinct_captions" (with one such modality)
            for metric, value in metrics.items():
                out[f"collapse/{metric}" + ("" if len(found) == 1 else f"/{name}")] = value
        return out

    def _slice(self, trainer: L.Trainer) -> Batch | None:
        """The first n validation examples as one Batch (from the DataModule's data if it has
        it, else gathered from the validation loader)."""
        data = getattr(trainer.datamodule, "val_data", None) if trainer.datamodule is not None else None
        if data is not None and hasattr(data, "batch"):
            return data.batch(torch.arange(min(self.n, len(data)))) if len(data) else None
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders] if loaders is not None else []
        parts: list[Batch] = []
        for loader in loaders:
            for part in loader:
                if not isinstance(part, Batch):
                    return None
                parts.append(part)
                if sum(len(p) for p in parts) >= self.n:
                    break
            break  # the first validation loader only
        if not parts:
            return None
        data = {k: torch.cat([p.data[k] for p in parts])[:self.n] for k in parts[0].data}
        masks = {k: torch.cat([p.present(k) for p in parts])[:self.n] for k in parts[0].data
                 if any(k in p.mask for p in parts)}
        return Batch(data, masks)
