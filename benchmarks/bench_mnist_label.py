"""mnist-label: MNIST image (1x28x28, Bernoulli) + one-hot label, MLP encoders and decoders
of width 512, latent 16, batch 256, Adam 1e-3. Models: MVAE, MMVAE (K=1 and K=10), MoPoE
and JMVAE (when omnivae.models.jmvae exists). Extra MMVAE checks: step time in K, and step
time at the start vs the end of one whole epoch (denormal slowdown)."""
from __future__ import annotations

import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)

from omnivae.data.tensors import TensorData

NAME, BATCH, LATENT, WIDTH = "mnist-label", 256, 16, 512


def config(model: str, **options) -> dict:
    return {"model": model, "latent_dim": LATENT, **options, "modalities": {
        "image": {"kind": "image", "shape": [1, 28, 28], "arch": "mlp", "hidden": [WIDTH], "likelihood": "bernoulli"},
        "label": {"kind": "categorical", "num_classes": 10, "hidden": [WIDTH]}}}


MODELS = {"mvae": config("mvae"), "mmvae_k1": config("mmvae", k=1), "mmvae_k10": config("mmvae", k=10),
          "mopoe": config("mopoe"), "jmvae": config("jmvae")}


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None) -> Path:
    t0 = time.perf_counter()
    c.setup(threads)
    plan = c.Plan(quick)
    result = c.new_result(NAME, quick, batch_size=BATCH, latent_dim=LATENT, width=WIDTH, lr=1e-3,
                          warmup=plan.warmup, window=plan.window, windows=plan.windows, rounds=plan.rounds)
    train = c.load_mnist_or_none("train", limit=4 * BATCH if quick else None)
    if train is None:
        result["skipped"].append({"model": "all", "reason": f"MNIST files not found in {c.mnist_dir()}"})
        return c.finish(result, t0, out)
    test = c.load_mnist_or_none("test", limit=BATCH if quick else 1000)
    runs = {}
    for label, cfg in MODELS.items():
        got = c.run_model(result, label, cfg, train, BATCH, plan,
                          lambda m: TensorData.from_raw(m, test).batch(), [("label", "image"), ("image", "label")],
                          options=label == "mopoe")
        if got:
            runs[label] = got
    if "mmvae_k1" in runs and "mmvae_k10" in runs:
        k1, k10 = runs["mmvae_k1"][2], runs["mmvae_k10"][2]
        ratios = {p: round(k10[p]["step_ms"] / k1[p]["step_ms"], 2) for p in ("lightning", "plain")}
        result["mmvae_k_ratio"] = ratios
        result["targets"].append(c.target("mmvae: step time K=10 / K=1 (linear = 10)", ratios["plain"], 10.0))
        model, data, _ = runs["mmvae_k10"]
        sub = data if not quick else TensorData({k: v[:2 * BATCH] for k, v in data.data.items()},
                                                {k: m[:2 * BATCH] for k, m in data.mask.items()})
        drift = c.epoch_start_vs_end(model, sub, BATCH, edge=2 if quick else 20, warmup=1 if quick else 3)
        result["mmvae_epoch"] = drift
        result["targets"].append(c.target("mmvae K=10: step time after / before one epoch of training",
                                          drift["trained_over_fresh"], 1.2,
                                          note=f"denormal slowdown check; in-epoch end/start {drift['end_over_start']}"))
    return c.finish(result, t0, out, flop_target=0.5)


if __name__ == "__main__":
    args = c.parse_args(__doc__)
    main(args.quick, args.out, args.threads)
