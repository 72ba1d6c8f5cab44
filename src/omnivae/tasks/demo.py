"""`omnivae demo`: the built-in shapes data, the default image+caption model, a few
minutes of CPU training, then metrics and figures."""
from __future__ import annotations

from pathlib import Path

from omnivae.run import train_run
from omnivae.tasks.evaluate import evaluate_model


def demo_config(minutes: float | None, level: str, model: str, n: int, seed: int, progress: bool,
                max_epochs: int = 200) -> dict:
    return {
        "data": {"source": "shapes", "options": {"n": n, "level": level, "seed": seed}, "test_fraction": 0.1},
        "model": {"model": model, "latent_dim": 16, "modalities": {
            "image": {"likelihood": "bernoulli", "channels": [32, 64, 128]},
            "text": {"max_len": 12, "hidden": 128, "embed_dim": 64}}},
        "train": {"max_epochs": max_epochs, "max_minutes": minutes, "batch_size": 64, "lr": 1e-3,
                  "patience": 10, "seed": seed, "progress": progress, "log_every_n_steps": 20},
    }


def run_demo(out: Path, minutes: float | None = 4.0, level: str = "partial", model: str = "mopoe", n: int = 6000,
             seed: int = 0, progress: bool = True, max_epochs: int = 200) -> dict:
    """Train for `minutes` of wall-clock time (or `max_epochs`, whichever comes first)."""
    config = demo_config(minutes, level, model, n, seed, progress, max_epochs)
    result = train_run(config, out, overwrite=True)
    return evaluate_model(result.model, result.splits.train, result.splits.test, out, run_dir=out, seed=seed)
