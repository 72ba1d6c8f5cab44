"""Torch threads when other processes share the machine: training steps (forward, backward,
Adam) of two workloads with one thread and with one per core, beside K competing processes
that this benchmark starts (each a one-thread matmul loop, as another training job would be),
the thread counts alternating so that drift on the machine hits both alike.

    python benchmarks/bench_threads.py [--quick] [--loads 0 1 2]

Writes benchmarks/results/threads.json: per workload and number of competitors, ms per step
(median of the rounds) for each thread count, the speed-up of all threads over one, and the
machine's load average when the measurement started (other work counts as competitors too).
The library's default (train.num_threads unset) is chosen from these figures: see
omnivae.threads.default_threads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common as c
from omnivae import Batch
from omnivae.data.shapes import make_shapes
from omnivae.data.tensors import TensorData
from omnivae.models import build_model
from omnivae.run import resolve_model_config

COMPETITOR = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\n"
              "while True:\n    a = torch.tanh(a @ a)\n")


def mnist_like(n: int = 2048):
    """MNIST's shapes (28x28 grey + 10 labels), random values: step time does not depend on them."""
    rng = np.random.default_rng(0)
    config = {"model": "mopoe", "latent_dim": 16, "modalities": {
        "image": {"kind": "image", "shape": [1, 28, 28], "arch": "mlp", "hidden": [512, 512]},
        "label": {"kind": "categorical", "num_classes": 10, "hidden": [512]}}}
    data = {"image": torch.from_numpy(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)),
            "label": torch.from_numpy(rng.integers(0, 10, n))}
    return build_model(config), data, 256


def shapes_conv_gru(n: int = 2048):
    raw = make_shapes(n, level="medium", seed=0)
    config = resolve_model_config({"model": "mopoe", "latent_dim": 16, "conditional_prior": None, "modalities": {
        "image": {"arch": "conv", "channels": [32, 64, 128]},
        "text": {"max_len": 12, "hidden": 128, "embed_dim": 64}}}, raw)
    model = build_model(config, raw)
    data = TensorData.from_raw(model, raw)
    return model, {k: data.data[k] for k in model.names}, 64


WORKLOADS = {"mnist-label, MoPoE, MLP, batch 256": mnist_like, "shapes, MoPoE, conv + GRU, batch 64": shapes_conv_gru}


def step_ms(model, data: dict, batch_size: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(next(iter(data.values())))
    gen = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(n, (batch_size,), generator=gen)
        batch = Batch({k: v.index_select(0, idx) for k, v in data.items()}, {})
        loss = model.loss(batch).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return c.time_ms(step, steps)


def start_competitors(k: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR], env={**os.environ, "OMP_NUM_THREADS": "1"})
             for _ in range(k)]
    time.sleep(2.0)  # let them reach their loop
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(c.RESULTS))
    args = parser.parse_args()
    t0 = time.perf_counter()
    cores = os.cpu_count() or 1
    rounds, steps = (1, 3) if args.quick else (4, 25)
    counts = sorted({1, cores})
    runs = []
    for label, make in WORKLOADS.items():
        torch.manual_seed(0)
        model, data, batch_size = make(256 if args.quick else 2048)
        model.train()
        for load in args.loads:
            procs = start_competitors(load)
            load_avg = os.getloadavg()[0]
            try:
                times = {n: [] for n in counts}
                for _ in range(rounds):
                    for n in counts:
                        times[n].append(step_ms(model, data, batch_size, steps, n))
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            ms = {str(n): round(statistics.median(v), 2) for n, v in times.items()}
            runs.append({"workload": label, "competitors": load, "load_avg_at_start": round(load_avg, 2),
                         "ms_per_step": ms, "all_over_one": round(ms["1"] / ms[str(cores)], 3)})
            print(f"{label:40s} competitors {load}: " + ", ".join(f"{k} thread(s) {v} ms" for k, v in ms.items()))
    result = c.new_result("threads", args.quick, cores=cores, rounds=rounds, steps=steps,
                          competitor="a one-thread 384x384 matmul + tanh loop per process")
    result["runs"] = runs
    c.save_result(result, t0, out=Path(args.out))


if __name__ == "__main__":
    main()
