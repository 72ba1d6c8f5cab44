"""Train a small shapes model with train_run, for the distributed test.

usage: ddp_train.py RUN_DIR DEVICES STRATEGY BATCH_SIZE RECORD_FILE [deterministic]

Every save_model call is recorded in RECORD_FILE as "pid rank folder" (one line each), so
the test can check that only rank zero wrote the model folder. With "deterministic", the
posterior draws are replaced by the posterior means (the model trains as a plain
autoencoder), so a multi-process run must match a single-process run step for step.
The patches are installed at import time, so processes that Lightning spawns (which import
this script again, with the same argv) carry them too.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def config(devices: int, strategy: str, batch_size: int, max_epochs: int = 25) -> dict:
    return {
        "data": {"source": "shapes", "options": {"n": 480, "level": "easy", "image_size": 16, "seed": 0},
                 "test_fraction": 0.1},
        "model": {"model": "mvae", "latent_dim": 6, "modalities": {
            "image": {"arch": "mlp", "hidden": [64]}, "text": {"hidden": 32, "embed_dim": 16, "max_len": 6}}},
        "train": {"max_epochs": max_epochs, "batch_size": batch_size, "lr": 1e-2, "progress": False,
                  "tensorboard": False, "accelerator": "cpu", "devices": devices, "strategy": strategy,
                  "num_threads": 1, "patience": None, "log_every_n_steps": 5, "seed": 0},
    }


def make_deterministic() -> None:
    """Posterior draws become posterior means (used for exact single/multi-process comparisons)."""
    from omnivae.distributions import Gaussian

    Gaussian.rsample = lambda self, k=None: self.mu if k is None else self.mu.expand(k, *self.mu.shape)


def install(record: str, deterministic: bool) -> None:
    import omnivae.io
    import omnivae.run

    def recording_save_model(model, folder, *args, **kwargs):
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        out = omnivae.io.save_model(model, folder, *args, **kwargs)
        with open(record, "a") as f:
            f.write(f"{os.getpid()} {getattr(rank_zero_only, 'rank', 0)} {folder}\n")
        return out

    omnivae.run.save_model = recording_save_model
    if deterministic:
        make_deterministic()


def main() -> None:
    import omnivae.run

    run_dir, devices, strategy, batch = sys.argv[1:5]
    epochs = 3 if sys.argv[6:7] == ["deterministic"] else 25
    omnivae.run.train_run(config(int(devices), strategy, int(batch), epochs), Path(run_dir), overwrite=True)


if __name__ in ("__main__", "__mp_main__") and len(sys.argv) >= 6:  # the script, or its spawned copies
    install(sys.argv[5], sys.argv[6:7] == ["deterministic"])

if __name__ == "__main__":
    main()
