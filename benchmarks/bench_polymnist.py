"""polymnist-5: five 3x28x28 image modalities (PolyMNIST built from MNIST), MLP encoders and
decoders of width 512, latent 32, batch 256, Adam 1e-3. Models: MVAE, MMVAE, MoPoE.
Then MoPoE and MVAE for M = 2..8 modalities (plain loop) to show how cost grows with M."""
from __future__ import annotations

import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)

from omnivae.data.polymnist import make_polymnist
from omnivae.data.tensors import TensorData
from omnivae.models import build_model

NAME, BATCH, LATENT, WIDTH, M, M_MAX = "polymnist-5", 256, 32, 512, 5, 8


def config(model: str, m: int = M, **options) -> dict:
    image = {"kind": "image", "shape": [3, 28, 28], "arch": "mlp", "hidden": [WIDTH], "likelihood": "bernoulli"}
    return {"model": model, "latent_dim": LATENT, **options, "modalities": {f"m{i}": dict(image) for i in range(m)}}


def sweep(raw, plan: c.Plan, quick: bool) -> dict:
    """Plain-loop step time of MoPoE and MVAE for M = 2..M_MAX modalities; every model runs
    once per round, in turn, and its median step over the rounds is kept."""
    ms = [2, 3] if quick else list(range(2, M_MAX + 1))
    models = {(f, m): build_model(config(f, m), raw) for f in ("mopoe", "mvae") for m in ms}
    full = TensorData.from_raw(models[("mopoe", ms[-1])], raw)  # the other models share its tensors
    data = {key: TensorData({n: full.data[n] for n in model.names}, {n: full.mask[n] for n in model.names})
            for key, model in models.items()}
    times: dict = {key: [] for key in models}
    for _ in range(plan.rounds):
        for key, model in models.items():
            times[key] += c.plain_steps(model, data[key], BATCH, plan.warmup + plan.window)[plan.warmup:]
    out = {"m": ms}
    for f in ("mopoe", "mvae"):
        out[f"{f}_step_ms"] = [c.summarise(times[(f, m)], BATCH, 0, plan.window)["step_ms"] for m in ms]
        print(f"  sweep {f}: " + ", ".join(f"M={m} {t} ms" for m, t in zip(ms, out[f"{f}_step_ms"])))
    return out


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None) -> Path:
    t0 = time.perf_counter()
    c.setup(threads)
    plan = c.Plan(quick, windows=2)
    result = c.new_result(NAME, quick, batch_size=BATCH, latent_dim=LATENT, width=WIDTH, modalities=M,
                          lr=1e-3, warmup=plan.warmup, window=plan.window, windows=plan.windows, rounds=plan.rounds)
    mnist = c.load_mnist_or_none("train", limit=2000 if quick else 30000)
    if mnist is None:
        result["skipped"].append({"model": "all", "reason": f"MNIST files not found in {c.mnist_dir()}"})
        return c.finish(result, t0, out)
    # Enough examples that every timed run stays inside one epoch (no checkpoint in a step).
    raw = make_polymnist(mnist, M_MAX, seed=0, n=2 * BATCH if quick else 16000)
    test = make_polymnist(c.load_mnist_or_none("test", limit=2000), M_MAX, seed=1, n=BATCH if quick else 1000)
    pairs = [("m0", "m1"), ([f"m{i}" for i in range(1, M)], "m0")]
    runs = {}
    for family in ("mvae", "mmvae", "mopoe"):
        got = c.run_model(result, family, config(family), raw, BATCH, plan,
                          lambda model: TensorData.from_raw(model, test).batch(), pairs, options=family == "mopoe")
        if got:
            runs[family] = got[2]
    if "mopoe" in runs and "mvae" in runs:
        ratio = round(runs["mopoe"]["plain"]["step_ms"] / runs["mvae"]["plain"]["step_ms"], 3)
        result["targets"].append(c.target("MoPoE / MVAE step time at M=5", ratio, 1.5))
    result["mopoe_vs_m"] = sweep(raw, plan, quick)
    return c.finish(result, t0, out, flop_target=0.5)


if __name__ == "__main__":
    args = c.parse_args(__doc__)
    main(args.quick, args.out, args.threads)
