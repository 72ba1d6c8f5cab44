"""Training options (one YAML section); every field has a safe default."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from omnivae.config import NonNegativeFloat, PositiveFloat, PositiveInt, StrictModel


LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # train.loggers names (train/loggers.py)


class AugmentConfig(StrictModel):
    """Random changes to the training batch's images (never to validation or test data); all off by default."""

    shift: Annotated[int, Field(ge=0)] = 0  # random translation by up to this many pixels each way (edges replicated)
    flip: bool = False  # random horizontal flips; off by default: flips change the meaning of digits and text
    noise: NonNegativeFloat = 0.0  # std of Gaussian pixel noise in [0, 1] units (clamped to [0, 1])

    @property
    def active(self) -> bool:
        return bool(self.shift or self.flip or self.noise)


class TrainConfig(StrictModel):
    max_epochs: PositiveInt = 20
    max_steps: int = Field(default=-1, ge=-1)  # -1: no step limit
    max_minutes: PositiveFloat | None = None  # wall-clock budget; training stops cleanly after it
    batch_size: PositiveInt = 128
    lr: NonNegativeFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0  # L2 penalty: torch.optim.Adam's weight_decay (added to the gradients)
    l1_weight: NonNegativeFloat = 0.0  # L1 penalty: this times the sum of |w| over weights (not biases or norms)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)  # training-image augmentation (train/augment.py)
    fused_optimizer: bool = True  # Adam's fused kernel (one call for all parameters); False: torch's default
    val_fraction: float = Field(default=0.1, ge=0, lt=1)  # used when no validation split is given
    patience: Annotated[int, Field(ge=0)] | None = 5  # early stopping on val/loss; None disables it
    grad_clip: PositiveFloat | None = 10.0  # max gradient norm; None disables clipping
    kl_warmup_epochs: NonNegativeFloat = 0.0  # beta rises linearly from 0 to its value over these epochs
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: PositiveInt = 1
    strategy: str = "auto"  # e.g. "ddp" or "ddp_spawn" (with accelerator cpu: gloo)
    precision: str = "32-true"  # "bf16-mixed" for autocast (fast on CPUs with AMX or AVX512-BF16, and on GPUs)
    compile: bool = False  # torch.compile the training objective (needs a C++ compiler on CPU)
    num_threads: PositiveInt | None = None  # torch threads per process; None: cores / processes, less busy ones
    # DataLoader workers; None: none for in-memory data (batches are tensor slices); for a streamed
    # folder one per core the torch threads leave free, at most 4 (one worker decodes a batch of
    # 128 64x64 PNGs in ~40 ms, far ahead of the step; OmniDataModule.workers)
    num_workers: int | None = Field(default=None, ge=0)
    progress: bool = True  # rich progress bar
    log_every_n_steps: PositiveInt = 50
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient stops the run, or skips the update
    tensorboard: bool = True  # false drops "tensorboard" from the loggers, default or listed
    # experiment tracking (docs/tracking.md): Lightning loggers by name, from LOGGERS; null: csv + tensorboard
    loggers: list[str] | None = None
    mlflow_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else a file: store in RUN/mlruns
    experiment: str = Field(default="omnivae", min_length=1)  # MLflow experiment / W&B project
    checkpoint_every_n_steps: int | None = None  # also write last.ckpt every n steps; None: at epoch ends only
    # adversarial sharpening of one image modality (docs/priors.md); 0 turns it off
    adversarial_weight: NonNegativeFloat = 0.0  # weight of the generator hinge term in the objective
    adversarial_modality: str | None = None  # the image modality to sharpen; None: the first image modality
    adversarial_lr: PositiveFloat = 2e-4  # the discriminator's Adam learning rate (betas 0.5, 0.9)
    adversarial_channels: list[PositiveInt] = Field(default=[32, 64], min_length=1)  # PatchGAN conv widths
    adversarial_warmup_epochs: NonNegativeFloat = 0.0  # the term's weight rises linearly from 0 over these epochs

    @field_validator("max_steps")
    @classmethod
    def _step_limit(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be >= 1, or -1 for no step limit")
        return v

    @field_validator("checkpoint_every_n_steps")
    @classmethod
    def _positive_steps(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be >= 1 (or null for epoch ends only), got {v}")
        return v

    @field_validator("loggers")
    @classmethod
    def _known_loggers(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        unknown = [name for name in v if name not in LOGGERS]
        if unknown:
            raise ValueError(f"unknown logger {unknown[0]!r}; allowed: {', '.join(LOGGERS)}")
        return list(dict.fromkeys(v))  # each once, in the given order

    @field_validator("adversarial_modality")
    @classmethod
    def _modality_name(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must name an image modality (or be null for the first one)")
        return v
