"""Training-batch augmentation (never of validation or test data): each modality of the batch
augmented as its kind says (`Modality.augment`: pictures get random shifts, flips and pixel noise,
batched on the tensors; kinds without an augmentation are passed through as they are)."""
from __future__ import annotations

import torch

from omnivae.batch import Batch
from omnivae.train.config import AugmentConfig


def augment_batch(model, batch: Batch, config: AugmentConfig, generator: torch.Generator | None = None) -> Batch:
    """A new Batch with every modality augmented by its kind (the masks, and modalities whose
    kind has no augmentation, shared); the same Batch when augmentation is off."""
    if not config.active:
        return batch
    data = {name: model.modalities[name].augment(x, config, generator) for name, x in batch.data.items()}
    if all(data[name] is x for name, x in batch.data.items()):
        return batch
    return Batch(data, batch.mask)
