"""Where a training step's time goes, through the library's Lightning path: the step is cut
at Lightning's hooks into data + loop (from the end of one step to the start of the next
training_step), forward (training_step: the objective and the cheap logging), backward,
optimiser (gradient check, clipping, Adam) and the rest of the step's bookkeeping; then the
heaviest torch ops (torch.profiler, self CPU time). Writes results/profile-<model>.json.

    python benchmarks/profile_step.py                   # seed-vae VAE, mnist-label MoPoE, Lightning's floor
    python benchmarks/profile_step.py --only mnist-label:mopoe
    python benchmarks/profile_step.py --only lightning-floor   # Lightning's own cost per step
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import bench_mnist_label
import bench_seed_vae
import common as c  # benchmarks/common.py (the script's folder is on sys.path)
import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

from omnivae.data.tensors import TensorData
from omnivae.models import build_model

WORKLOADS = {
    "seed-vae:vae": (lambda: bench_seed_vae.WORKLOADS["vae"][0], False, 128),
    "mnist-label:mopoe": (lambda: bench_mnist_label.config("mopoe"), True, 256),
}
PHASES = ("data_and_loop", "forward", "backward", "optimizer", "step_end")


class PhaseClock(L.Callback):
    """Wall-clock marks at the hooks that bound each phase of a step."""

    def __init__(self):
        self.marks: list[dict[str, float]] = []
        self._last_end: float | None = None

    def _mark(self, name: str) -> None:
        self.marks[-1][name] = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.marks.append({"start": time.perf_counter(), "prev_end": self._last_end or float("nan")})

    def on_before_backward(self, trainer, pl_module, loss):
        self._mark("forward_done")

    def on_after_backward(self, trainer, pl_module):
        self._mark("backward_done")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._mark("end")
        self._last_end = self.marks[-1]["end"]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._mark("optimizer_start")

    def phases_ms(self, warmup: int) -> dict[str, float]:
        rows = [m for m in self.marks[warmup:] if len(m) == 6]
        spans = {"data_and_loop": [m["start"] - m["prev_end"] for m in rows],
                 "forward": [m["forward_done"] - m["start"] for m in rows],
                 "backward": [m["backward_done"] - m["forward_done"] for m in rows],
                 "optimizer": [m["end"] - m["optimizer_start"] for m in rows],
                 "step_end": [m["optimizer_start"] - m["backward_done"] for m in rows]}
        return {k: round(1000 * statistics.median(v), 3) for k, v in spans.items()}


def profile_workload(name: str, steps: int, warmup: int) -> dict:
    make_config, with_label, batch = WORKLOADS[name]
    raw = c.load_mnist_or_none("train", limit=20000, with_label=with_label)
    if raw is None:
        return {"workload": name, "skipped": f"MNIST files not found in {c.mnist_dir()}"}
    model = build_model(make_config(), raw)
    data = TensorData.from_raw(model, raw)
    phases = PhaseClock()
    with c.clock_on_trainers(phases):  # lightning_steps adds its own StepClock inside this
        clock = c.lightning_steps(model, data, batch, steps)
    split = phases.phases_ms(warmup)
    step_ms = round(1000 * statistics.median(clock.step_times[warmup:]), 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        c.lightning_steps(model, data, batch, max(10, steps // 4))
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    top = [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
            "share": round(e.self_cpu_time_total / total, 3)} for e in ops[:15]]
    return {"workload": name, "threads": torch.get_num_threads(), "batch_size": batch, "steps": steps,
            "step_ms": step_ms, "phases_ms": split, "top_ops": top}


def lightning_floor(steps: int, warmup: int, rounds: int = 5) -> dict:
    """Lightning's own cost per step: a 2-parameter autoencoder on random 2-d vectors (batch 16)
    through fit and through a plain loop, in alternating rounds; the difference is the loop."""
    from omnivae.data.raw import RawData

    raw = RawData({"x": torch.rand(20000, 2).numpy()}, {"x": "vector"})
    model = build_model({"model": "ae", "latent_dim": 1,
                         "modalities": {"x": {"kind": "vector", "dim": 2, "hidden": []}}}, raw)
    data = TensorData.from_raw(model, raw)
    rounds_ms: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(rounds):
        rounds_ms["lightning"].append(statistics.median(c.lightning_steps(model, data, 16, steps).step_times[warmup:]))
        rounds_ms["plain"].append(statistics.median(c.plain_steps(model, data, 16, steps)[warmup:]))
    out = {k: round(1000 * statistics.median(v), 3) for k, v in rounds_ms.items()}
    return {"workload": "lightning-floor", "threads": torch.get_num_threads(), "batch_size": 16, "steps": steps,
            "rounds": rounds, "lightning_step_ms": out["lightning"], "plain_step_ms": out["plain"],
            "loop_cost_ms": round(out["lightning"] - out["plain"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted([*WORKLOADS, "lightning-floor"]))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=c.RESULTS)
    args = parser.parse_args()
    c.setup(args.threads)
    for name in args.only or [*WORKLOADS, "lightning-floor"]:
        if name == "lightning-floor":
            result = lightning_floor(max(args.steps, 200), warmup=50)
            path = args.out / "profile-lightning-floor.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"lightning-floor: {result['lightning_step_ms']} ms through fit, {result['plain_step_ms']} ms in a "
                  f"plain loop: Lightning's loop costs {result['loop_cost_ms']} ms a step\n  -> {path}")
            continue
        result = profile_workload(name, args.steps, warmup=20)
        path = args.out / f"profile-{name.replace(':', '-')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        if "skipped" in result:
            print(f"{name}: {result['skipped']}")
            continue
        print(f"{name}: step {result['step_ms']} ms = " + ", ".join(f"{k} {v}" for k, v in result["phases_ms"].items()))
        for op in result["top_ops"][:8]:
            print(f"    {op['op']:<40} {op['self_cpu_ms']:>9} ms  {op['share']:.0%}")
        print(f"  -> {path}")


if __name__ == "__main__":
    main()
