"""Extending omnivae: a new modality kind (a wind direction, an angle on the circle) and a new
model (a mean-of-experts VAE), each one class plus one registration, trained next to the
built-in kinds and then used like any other model.

    python examples/custom_kind_and_model.py            # 3,000 examples, 15 epochs
    python examples/custom_kind_and_model.py --quick    # 300 examples, 1 epoch (OMNIVAE_EXAMPLE_QUICK=1 too)
"""
import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from omnivae.batch import Batch, LossOutput
from omnivae.distributions import Gaussian
from omnivae.errors import InputError
from omnivae.io import load_model
from omnivae.modalities import Modality, ModalitySpec, register_modality
from omnivae.modalities.base import check_finite, flatten_codes, mlp
from omnivae.models import register_model
from omnivae.models.base import ModelConfig, MultimodalModel
from omnivae.run import train_run


# --8<-- [start:kind]
class AngleSpec(ModalitySpec):
    kind: Literal["angle"] = "angle"
    hidden: list[int] = [32]
    concentration: float = 8.0  # of the von Mises likelihood: how sharply decoded directions are judged


class AngleModality(Modality):
    """Angles in radians [B]: encoded through (cos, sin), decoded as a direction with a von Mises likelihood."""

    kind = "angle"
    spec_class = AngleSpec

    def __init__(self, name: str, spec: AngleSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        self.encoder = mlp([2, *spec.hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *spec.hidden, 2])

    # reading training data (class methods: no model exists yet)
    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        arr = cls.numeric_rows(name, arr, 1, "[N] angles in radians").astype(np.float32)
        return arr, np.isfinite(arr), None  # NaN marks a missing angle

    # user data in, checked
    def prepare(self, raw) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(raw, dtype=np.float32))
        self.check(x)
        return x

    def check(self, x: torch.Tensor) -> None:
        if x.dim() != 1:
            raise self._error(f"expected angles of shape [batch], got {list(x.shape)}")
        check_finite(self, x)

    def read_cli(self, values: list[str]):
        """Degrees on the command line: `--from wind 90`."""
        try:
            return np.radians([float(v) for v in values]).astype(np.float32)
        except ValueError:
            raise InputError(f"modality {self.name!r}: expected angles in degrees, got {values}") from None

    def placeholder(self, n: int) -> torch.Tensor:
        return torch.zeros(n)

    # networks
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.cos(), x.sin()], dim=-1)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_codes(z)
        direction = torch.nn.functional.normalize(self.decoder(flat), dim=-1).reshape(*lead, 2)
        k = self.spec.concentration
        log_norm = math.log(2 * math.pi) + k + math.log(torch.special.i0e(torch.tensor(k)).item())
        return k * (direction * self.features(x)).sum(-1) - log_norm  # von Mises log-density

    def generate(self, z: torch.Tensor, **_) -> torch.Tensor:
        out = self.decoder(z)
        return torch.atan2(out[:, 1], out[:, 0])  # radians in (-pi, pi]

    def to_output(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rad2deg(x)  # users read degrees


register_modality(AngleModality)
# --8<-- [end:kind]


# --8<-- [start:model]
class MeanOfExpertsConfig(ModelConfig):
    model: Literal["mean_of_experts"] = "mean_of_experts"


class MeanOfExperts(MultimodalModel):
    """The joint posterior is the average of the present unimodal experts' means and
    log-variances; the objective is the plain ELBO of every modality from it."""

    about = "multimodal VAE, averaged experts (an example of a custom model)"
    paper = "omnivae documentation, Extending omnivae"
    config_class = MeanOfExpertsConfig

    def fuse(self, mu, logvar, present) -> Gaussian:  # mu, logvar [M,B,D], present [M,B]
        w = present.unsqueeze(-1).to(mu.dtype)
        n = w.sum(0).clamp_min(1.0)
        return Gaussian((mu * w).sum(0) / n, (logvar * w).sum(0) / n)

    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        q = self.fuse(*self.encode_unimodal(batch))
        z = q.rsample().unsqueeze(0)  # [1,B,D]
        rec = torch.stack(list(self.log_likelihoods(z, batch).values())).sum(0)[0]  # [B]
        kl = q.kl_standard()
        total = -(rec - self.config.beta * beta_scale * kl).mean()
        return LossOutput(total, {"loss": total.detach(), "rec": rec.mean().detach(), "kl": kl.mean().detach()})


register_model("mean_of_experts", MeanOfExperts)
# --8<-- [end:model]


def make_data(path: Path, n: int, seed: int = 0) -> None:
    """Wind direction (an angle), the quadrant it blows from (a label) and a noisy unit vector of it."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-math.pi, math.pi, n).astype(np.float32)
    quadrant = ((angle + math.pi) // (math.pi / 2)).astype(np.int64).clip(0, 3)
    vane = np.stack([np.cos(angle), np.sin(angle)], 1) + rng.normal(0, 0.1, (n, 2))
    angle[rng.random(n) < 0.1] = np.nan  # some examples miss their angle
    np.savez(path, wind=angle, quadrant=quadrant, vane=vane.astype(np.float32))


def main(quick: bool, out: Path) -> None:
    make_data(out / "wind.npz", 300 if quick else 3000)
    # --8<-- [start:train]
    config = {"data": {"source": "arrays", "options": {"path": str(out / "wind.npz"),
                                                       "schema": {"wind": "angle"}}},
              "model": {"model": "mean_of_experts", "latent_dim": 4, "conditional_prior": None},
              "train": {"max_epochs": 1 if quick else 15, "batch_size": 64, "progress": False, "num_threads": 1}}
    run = train_run(config, out / "run", overwrite=True)
    model = load_model(out / "run" / "model")  # the kind and the model are registered: it loads like any other
    # --8<-- [end:train]
    degrees = model.generate({"quadrant": [0, 1, 2, 3]}, given=["quadrant"], targets=["wind"], mean=True)["wind"]
    print(f"trained {run.config.model['model']} for {run.steps_trained} steps on kinds {run.splits.train.kinds}")
    # the quadrants start at -180, -90, 0 and 90 degrees: a trained model answers near -135, -45, 45, 135
    print("wind direction (degrees) generated from each quadrant:", [round(float(d)) for d in degrees])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and one epoch")
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: a temporary one)")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("OMNIVAE_EXAMPLE_QUICK") == "1"
    if args.out is not None:
        main(quick, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(quick, Path(tmp))
