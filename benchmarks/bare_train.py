"""The user-path yardstick: a run's networks trained by a bare hand-written PyTorch loop.

`bare_loop(run_dir, steps)` builds the model from a finished run's run.yaml, loads the same
training rows, and trains it for `steps` steps over in-memory tensors (a random permutation sliced
into batches, model.loss, Adam, nothing else: no validation, no checkpoints, no logging), then
fits the conditional prior as the run does. Run as a script, it is the whole job a user's own
training script would be, timed from launch to exit by benchmarks/bench_user_path.py: import
torch, read the folder, build the networks, train, fit the prior, save the model.

    python benchmarks/bare_train.py RUN_DIR STEPS OUT_DIR THREADS

Imports torch and omnivae's data and model code only (no Lightning: `omnivae.run` does not
load it).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


def bare_loop(run_dir: Path, steps: int, save_to: Path | None = None) -> dict:
    """Seconds of the model's steps (`model_s`) and of the conditional prior's fit (`prior_s`,
    encoding the training data plus its own steps), the loss at both ends; with `save_to`, the
    trained model saved there (safetensors + JSON, as the run saves it)."""
    from omnivae.batch import Batch
    from omnivae.data.sources import load_source
    from omnivae.data.tensors import TensorData
    from omnivae.models import build_model
    from omnivae.run import RunConfig, seed_everything, split_data
    from omnivae.run_folder import RunFolder

    config = RunConfig.from_dict(RunFolder(run_dir).read_config())
    seed_everything(config.train.seed)
    train = split_data(load_source(config.data), config).train
    model = build_model(config.model, train)
    data = TensorData.from_raw(model, train)
    partial = {k: m for k, m in data.mask.items() if not bool(m.all())}
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    n, b = len(data), config.train.batch_size
    model.train()
    losses, done = [], 0
    start = time.perf_counter()
    while done < steps:
        perm = torch.randperm(n)
        for i in range(0, n, b):
            idx = perm[i:i + b]
            batch = Batch({k: v.index_select(0, idx) for k, v in data.data.items()},
                          {k: m.index_select(0, idx) for k, m in partial.items()})
            opt.zero_grad(set_to_none=True)
            loss = model.loss(batch).total
            loss.backward()
            opt.step()
            done += 1
            if done in (1, steps):
                losses.append(round(loss.item(), 3))
            if done == steps:
                break
    seconds = time.perf_counter() - start
    prior_s = 0.0
    if getattr(model, "conditional_prior", None) is not None:
        from omnivae.priors.conditional import fit_conditional_prior

        start = time.perf_counter()
        fit_conditional_prior(model, data, seed=config.train.seed, training_steps=steps)
        prior_s = time.perf_counter() - start
    if save_to is not None:
        from omnivae.io import save_model

        save_model(model.eval(), save_to)
    return {"seconds": round(seconds + prior_s, 3), "model_s": round(seconds, 3), "prior_s": round(prior_s, 3),
            "steps": steps, "first_last_loss": losses}


if __name__ == "__main__":
    run, steps, out, threads = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as omnivae's fit sets it
    print(json.dumps(bare_loop(run, steps, out)))
