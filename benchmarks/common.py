"""Shared pieces of the benchmark scripts: thread setup, step timing through the library's
Lightning path and through a plain loop, resident memory from /proc, the machine's matmul
peak, FLOP counting, targets and result files. Each bench_*.py script is a list of
workload definitions that calls into this file.

Timing convention: a step's time is the wall time between the ends of two consecutive
training steps, so it includes fetching the batch, the forward and backward pass, the
optimiser step and (on the Lightning path) every hook and logging call in between.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

import omnivae
from omnivae.batch import Batch
from omnivae.data.tensors import TensorData, batch_loader
from omnivae.models import MODELS, build_model
from omnivae.train import trainer as trainer_module
from omnivae.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- setup ------------------------------------------------------------------------------
def setup(threads: int | None = None) -> int:
    """Fixed threads (default: cores) and flushed denormals, as omnivae.train.trainer.fit
    sets them; set here for every path so the bare and plain loops run under the same settings."""
    cores = threads or os.cpu_count() or 1
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-fit banners
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    warnings.filterwarnings("ignore", message=r".*treespec.*")
    torch.set_num_threads(cores)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    global BASELINE_RSS_MB, IMPORT_RSS_MB
    IMPORT_RSS_MB = rss_mb()  # torch, Lightning and omnivae imported
    warm_up_runtime()
    BASELINE_RSS_MB = rss_mb()  # plus the runtime's fixed footprint; no workload data yet
    return cores


def warm_up_runtime() -> None:
    """A few steps of a tiny model through both paths, so thread pools, kernel scratch space,
    the trainer's and loggers' imports count as the fixed start-up footprint, not as a workload's."""
    from omnivae.data.raw import RawData

    raw = RawData({"x": torch.rand(64, 8).numpy()}, {"x": "vector"})
    model = build_model({"model": "vae", "latent_dim": 2, "modalities": {"x": {"kind": "vector", "dim": 8, "hidden": [8]}}}, raw)
    data = TensorData.from_raw(model, raw)
    lightning_steps(model, data, 16, 3)
    plain_steps(model, data, 16, 3)


BASELINE_RSS_MB = IMPORT_RSS_MB = float("nan")


def parse_args(doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="a handful of steps per path (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the result JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    return parser.parse_args()


def mnist_dir() -> Path:
    """$OMNIVAE_MNIST_DIR, else the shared copy next to the repository."""
    env = os.environ.get("OMNIVAE_MNIST_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def load_mnist_or_none(split: str = "train", limit: int | None = None, **options):
    """MNIST as RawData, or None when the files are not there (the workload is then skipped)."""
    from omnivae.data.mnist import load_mnist

    root = mnist_dir()
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        return None
    return load_mnist(root, split, limit=limit, **options)


def model_available(name: str, module: str) -> str | None:
    """None if model `name` is registered once omnivae.models.<module> is imported, else
    the reason the model is skipped (models being written by others may be missing)."""
    from importlib import import_module

    try:
        import_module(f"omnivae.models.{module}")
    except ImportError as exc:
        return f"skipped: not available ({exc})"
    except Exception as exc:  # noqa: BLE001 - a half-written model file must not stop the other workloads
        return f"skipped: not available ({type(exc).__name__}: {exc})"
    return None if name in MODELS else f"skipped: not available (no model {name!r} registered)"


# -- memory -------------------------------------------------------------------------------
_STATM = os.open("/proc/self/statm", os.O_RDONLY)  # kept open: sampled at every step boundary


def rss_mb() -> float:
    """Current resident set size of this process, in MB (from /proc/self/statm; one pread,
    so sampling it at every step adds microseconds, not the cost of opening a file)."""
    return int(os.pread(_STATM, 128, 0).split()[1]) * PAGE / 2**20


def peak_rss_mb() -> float:
    """High-water mark of the resident set since start or the last reset_peak_rss (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so each model gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_growth(samples: list[float], warmup: int) -> dict[str, float]:
    """RSS samples taken at step boundaries -> start (median of the first quarter after
    warm-up), end (median of the last quarter) and growth in MB and percent."""
    s = samples[warmup:] or samples
    q = max(1, len(s) // 4)
    start, end = statistics.median(s[:q]), statistics.median(s[-q:])
    return {"start_mb": round(start, 1), "end_mb": round(end, 1), "growth_mb": round(end - start, 1),
            "growth_pct": round(100 * (end - start) / start, 2), "samples": len(s)}


# -- machine peak and FLOPs -------------------------------------------------------------
def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Best-of-`repeats` fp32 n x n matmul rate of this process, in GFLOP/s."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops_per_sample(model: torch.nn.Module, batch: Batch) -> float:
    """Matmul/conv FLOPs of one forward + backward training step, divided by the batch size
    (FlopCounterMode counts matrix products and convolutions, not elementwise ops)."""
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(batch).total.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch)


def memory_budget(model, data: TensorData, batch: Batch) -> dict[str, float]:
    """What a step needs to hold, in MB: the prepared data, the training state (weights,
    gradients and Adam's two moments: 4x the parameters) and one step's activations (every
    tensor autograd saves for the backward pass, counted once per storage)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(batch).total
    loss.backward()
    model.zero_grad(set_to_none=True)
    mb = 2 ** 20
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"data_mb": round(sum(v.nbytes for v in data.data.values()) / mb, 1),
            "state_mb": round(4 * params / mb, 1), "activations_mb": round(sum(saved.values()) / mb, 1),
            "baseline_rss_mb": round(BASELINE_RSS_MB, 1), "import_rss_mb": round(IMPORT_RSS_MB, 1)}


# -- step timing ------------------------------------------------------------------------
class StepClock(L.Callback):
    """Wall time and RSS at the end of every training step."""

    def __init__(self):
        self.ends: list[float] = [time.perf_counter()]
        self.rss: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())
        self.rss.append(rss_mb())

    @property
    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.ends[:-1], self.ends[1:])]


@contextmanager
def clock_on_trainers(*callbacks: L.Callback) -> Iterator[None]:
    """Run the real omnivae.train.trainer.fit, with `callbacks` (a StepClock, say) added to the
    Trainer it makes."""
    real = trainer_module.make_trainer

    def with_clock(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.callbacks.extend(callbacks)
        return trainer

    with mock.patch.object(trainer_module, "make_trainer", with_clock):
        yield


def bench_train_config(batch_size: int, steps: int, lr: float = 1e-3, **overrides) -> TrainConfig:
    """The library's defaults, minus what a bare loop cannot have: no progress bar, no
    TensorBoard, no gradient clipping, no early stopping. The CSV logger stays."""
    options = {"max_epochs": 1000, "max_steps": steps, "batch_size": batch_size, "lr": lr, "grad_clip": None,
               "patience": None, "progress": False, "tensorboard": False, "num_threads": torch.get_num_threads()}
    return TrainConfig(**{**options, **overrides})


def lightning_steps(model, data: TensorData, batch_size: int, steps: int, lr: float = 1e-3,
                    **options) -> StepClock:
    """`steps` training steps through omnivae.train.trainer.fit (train `options` such as
    precision or compile on top of the benchmark defaults); per-step times and RSS."""
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="omnivae-bench-") as run_dir, clock_on_trainers(clock):
        clock.ends = [time.perf_counter()]
        trainer_module.fit(model, data, None, bench_train_config(batch_size, steps, lr, **options), run_dir)
    return clock


# Training options measured against the default (fp32, eager): bf16 autocast and torch.compile.
OPTION_VARIANTS = {"fp32": {}, "bf16-mixed": {"precision": "bf16-mixed"}, "compile": {"compile": True},
                   "compile+bf16": {"compile": True, "precision": "bf16-mixed"}}


def measure_options(model, data: TensorData, batch_size: int, plan: "Plan", lr: float = 1e-3,
                    variants: dict[str, dict] | None = None) -> dict[str, Any]:
    """Lightning step time under each training option, in alternating rounds; the first
    step of a compiled variant holds the compilation (reported as first_step_s), and every
    variant's first `warmup` steps are dropped. --quick skips the compiled variants."""
    variants = dict(variants or OPTION_VARIANTS)
    if plan.quick:
        variants = {k: v for k, v in variants.items() if not v.get("compile")}
    times: dict[str, list[float]] = {k: [] for k in variants}
    first: dict[str, float] = {}
    warmup = max(plan.warmup, 3)
    for _ in range(plan.rounds):
        for name, options in variants.items():
            t = lightning_steps(model, data, batch_size, warmup + plan.window * plan.windows, lr, **options).step_times
            first.setdefault(name, round(t[0], 2))
            times[name] += t[warmup:]
    base = statistics.median(times["fp32"])
    return {name: {"step_ms": round(1000 * statistics.median(t), 2), "first_step_s": first[name],
                   "speedup": round(base / statistics.median(t), 3)} for name, t in times.items()}


def plain_steps(model, data: TensorData, batch_size: int, steps: int, lr: float = 1e-3,
                seed: int = 0) -> list[float]:
    """`steps` steps of the library's model in a plain loop: batch_loader, model.loss, Adam."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    times, last, epoch = [], time.perf_counter(), 0
    while len(times) < steps:
        for batch in batch_loader(data, batch_size, shuffle=True, seed=seed + epoch):
            opt.zero_grad(set_to_none=True)
            model.loss(batch).total.backward()
            opt.step()
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if len(times) == steps:
                break
        epoch += 1
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a's step time over b's in the same round. The machine's speed
    drifts by tens of percent between seconds (a shared virtual machine), so paths are compared
    within each round, where they ran back to back, not pooled over the whole run."""
    return round(statistics.median(x / y for x, y in zip(a, b)), 3)


def summarise(times: list[float], batch_size: int, warmup: int, window: int) -> dict[str, float]:
    """Per-step times -> median step (ms) and samples/s as the median over fixed windows of
    `window` steps after `warmup` steps."""
    kept = times[warmup:] or times
    windows = [kept[i:i + window] for i in range(0, len(kept) - window + 1, window)] or [kept]
    rates = [batch_size * len(w) / sum(w) for w in windows]
    return {"step_ms": round(1000 * statistics.median(kept), 2),
            "samples_per_s": round(statistics.median(rates), 1),
            "steps": len(kept), "windows": len(windows)}


def time_ms(fn: Callable[[], Any], reps: int, warmup: int = 2) -> float:
    """Mean milliseconds of one call of `fn` over `reps` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1000


def throughput(fn: Callable[[], Any], n_examples: int, repeats: int) -> float:
    """Examples per second of `fn` (which handles n_examples), median of `repeats` calls."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(n_examples / statistics.median(times), 1)


def epoch_start_vs_end(model, data: TensorData, batch_size: int, edge: int, warmup: int = 3,
                       rounds: int = 3) -> dict[str, Any]:
    """One whole epoch through fit: median step time of the first `edge` steps (after
    warm-up) against the last `edge`. A slowdown points at denormal floats, or at a change
    in machine load; so the trained model is also timed against a copy of the untrained one
    in alternating plain-loop rounds, which load drift hits alike (`trained_over_fresh`)."""
    fresh = copy.deepcopy(model)
    steps = -(-len(data) // batch_size)
    clock = lightning_steps(model, data, batch_size, steps)
    t = clock.step_times[warmup:]
    edge = max(1, min(edge, len(t) // 2))
    start, end = statistics.median(t[:edge]), statistics.median(t[-edge:])
    n = max(2, edge // 2)
    timed: dict[str, list[float]] = {"fresh": [], "trained": []}
    for _ in range(rounds):
        timed["fresh"] += plain_steps(fresh, data, batch_size, n + 1)[1:]
        timed["trained"] += plain_steps(model, data, batch_size, n + 1)[1:]
    fresh_ms, trained_ms = (1000 * statistics.median(timed[k]) for k in ("fresh", "trained"))
    return {"steps": steps, "edge_steps": edge, "start_ms": round(1000 * start, 2),
            "end_ms": round(1000 * end, 2), "end_over_start": round(end / start, 3),
            "fresh_ms": round(fresh_ms, 2), "trained_ms": round(trained_ms, 2),
            "trained_over_fresh": round(trained_ms / fresh_ms, 3),
            "rss_within_epoch": rss_growth(clock.rss, warmup)}


class BareLoop:
    """A hand-written training loop over one whole-data-set tensor X: a random permutation
    sliced into batches, `loss(x)` per batch, Adam. Callable as path(n) -> step times."""

    def __init__(self, net: torch.nn.Module, X: torch.Tensor, batch_size: int, lr: float = 1e-3):
        self.net, self.X, self.batch_size = net, X, batch_size
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)

    def __call__(self, steps: int) -> list[float]:
        net, X, b = self.net, self.X, self.batch_size
        times, last = [], time.perf_counter()
        while len(times) < steps:
            perm = torch.randperm(len(X))
            for i in range(0, len(X) - b + 1, b):
                self.opt.zero_grad(set_to_none=True)
                net.loss(X[perm[i:i + b]]).backward()
                self.opt.step()
                now = time.perf_counter()
                times.append(now - last)
                last = now
                if len(times) == steps:
                    break
        return times


# -- the standard measurement of one model ----------------------------------------------
class Plan:
    """How many steps each measurement takes: full or --quick."""

    def __init__(self, quick: bool, warmup: int = 3, window: int = 10, windows: int = 3, rounds: int = 2):
        if quick:
            warmup, window, windows, rounds = 1, 2, 1, 1
        self.quick, self.warmup, self.window, self.windows, self.rounds = quick, warmup, window, windows, rounds

    @property
    def steps(self) -> int:
        """Steps per path and round."""
        return self.warmup + self.window * self.windows


def measure_training(model, data: TensorData, batch_size: int, plan: Plan, lr: float = 1e-3,
                     extra_paths: dict[str, Callable[[int], list[float]]] | None = None) -> dict[str, Any]:
    """Time the Lightning path and the plain loop (and any `extra_paths`, e.g. a bare
    hand-written loop) in alternating rounds, so drifting machine load hits every path
    alike; then peak RSS, its growth over the Lightning steps, FLOPs per sample."""
    paths: dict[str, Callable[[int], list[float]]] = {
        "lightning": lambda n: lightning_steps(model, data, batch_size, n, lr).step_times,
        "plain": lambda n: plain_steps(model, data, batch_size, n, lr),
        **(extra_paths or {}),
    }
    reset_peak_rss()
    before = rss_mb()  # data loaded, model built: what training adds comes on top of this
    wall, cpu = time.perf_counter(), time.process_time()
    times: dict[str, list[float]] = {k: [] for k in paths}
    per_round: dict[str, list[float]] = {k: [] for k in paths}
    rss: list[float] = []
    for r in range(plan.rounds):
        for name, run in paths.items():
            if name == "lightning" and r == plan.rounds - 1:  # last round: RSS at every step boundary
                clock = lightning_steps(model, data, batch_size, plan.steps, lr)
                t, rss = clock.step_times, clock.rss
            else:
                t = run(plan.steps)
            times[name] += t[plan.warmup:]
            per_round[name].append(statistics.median(t[plan.warmup:] or t))
    out: dict[str, Any] = {k: summarise(v, batch_size, 0, plan.window) for k, v in times.items()}
    out["round_step_ms"] = {k: [round(1000 * v, 2) for v in vs] for k, vs in per_round.items()}
    # CPU seconds per wall second while training: well below the thread count means other
    # processes took cores from this one and the step times are inflated.
    out["cpu_per_wall"] = round((time.process_time() - cpu) / (time.perf_counter() - wall), 2)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["rss_within_epoch"] = rss_growth(rss, plan.warmup)
    out["lightning_overhead"] = paired_ratio(per_round["lightning"], per_round["plain"])
    first = next(iter(batch_loader(data, batch_size, shuffle=False)))
    out["flops_per_sample"] = round(flops_per_sample(model, first))
    memory = memory_budget(model, data, first)
    memory["rss_before_training_mb"] = round(before, 1)
    memory["training_growth_mb"] = round(out["peak_rss_mb"] - before, 1)
    # peak RSS while training, above the RSS before it, less the training state, in units of
    # one step's activations: the "small multiple of one step" of the memory target
    memory["growth_in_activations"] = round((memory["training_growth_mb"] - memory["state_mb"])
                                            / max(memory["activations_mb"], 1e-3), 2)
    out["memory"] = memory
    return out


def add_flop_rate(result: dict[str, Any], peak_gflops: float, path: str = "lightning") -> None:
    """Achieved GFLOP/s on `path` and its fraction of the matmul peak."""
    achieved = result["flops_per_sample"] * result[path]["samples_per_s"] / 1e9
    result["achieved_gflops"] = round(achieved, 2)
    result["peak_fraction"] = round(achieved / peak_gflops, 3)


def generation_throughput(model, batch: Batch, pairs, repeats: int) -> dict[str, float]:
    """Examples/s of cross-modal generation through model.generate (user-facing outputs,
    eval mode, no gradients); `pairs` holds (given name or names, target name)."""
    model.eval()
    out = {}
    for given, target in pairs:
        given = [given] if isinstance(given, str) else list(given)
        out[f"{'+'.join(given)}->{target}"] = throughput(
            lambda g=given, t=target: model.generate(batch, given=g, targets=[t]), len(batch), repeats)
    model.train()
    return out


# Modules that define models other people are still writing; missing ones are skipped.
MODEL_MODULES = {"jmvae": "jmvae", "stacked_ae": "stacked"}


def run_model(result: dict[str, Any], label: str, config: dict, raw, batch_size: int, plan: Plan,
              test_batch: Callable[[Any], Batch] | None = None,
              pairs: list[tuple[str, str]] = (), extra_paths=None, lr: float = 1e-3,
              options: dict[str, dict] | bool = False):
    """Build one model, measure it (measure_training + FLOP rate + generation) and append the
    run to `result`; a model that is not available is recorded under result["skipped"].
    The matmul peak is measured again after each model (machine load drifts); `finish`
    rates every run against the best peak seen.
    extra_paths: {name: make(model, data) -> path(steps) -> step times}, timed alongside.
    options: True (or {name: train options}) also times bf16 autocast and torch.compile.
    Returns (model, data, run) or None when skipped."""
    reason = model_available(config["model"], MODEL_MODULES.get(config["model"], config["model"]))
    if reason:
        result["skipped"].append({"model": label, "reason": reason})
        print(f"  {label}: {reason}")
        return None
    t0 = time.perf_counter()
    model = build_model(config, raw)
    data = TensorData.from_raw(model, raw)
    extra = {k: make(model, data) for k, make in (extra_paths or {}).items()}
    run = {"model": label, "config": model.config.to_dict(), "batch_size": batch_size,
           "parameters": sum(p.numel() for p in model.parameters()),
           **measure_training(model, data, batch_size, plan, lr, extra)}
    if not plan.quick:
        result["machine"]["matmul_peak_samples"].append(round(matmul_peak_gflops(repeats=4), 1))
    add_flop_rate(run, max(result["machine"]["matmul_peak_samples"]))
    memory = run["memory"]
    # the script also holds the raw arrays the prepared tensors came from
    memory["raw_data_mb"] = round(sum(getattr(v, "nbytes", 0) for v in raw.modalities.values()) / 2 ** 20, 1)
    if options:
        run["options"] = measure_options(model, data, batch_size, plan, lr,
                                         options if isinstance(options, dict) else None)
        print(f"  {label} options: " + ", ".join(f"{k} {v['step_ms']} ms" for k, v in run["options"].items()))
    if pairs and test_batch is not None:
        run["generation_per_s"] = generation_throughput(model, test_batch(model), list(pairs),
                                                        1 if plan.quick else 3)
    run["seconds"] = round(time.perf_counter() - t0, 1)
    result["runs"].append(run)
    print(f"  {label}: lightning {run['lightning']['step_ms']} ms/step, plain {run['plain']['step_ms']} ms/step, "
          f"{run['peak_fraction']:.0%} of matmul peak, {run['seconds']} s")
    return model, data, run


# -- targets and results ------------------------------------------------------------------
def target(name: str, value: float, limit: float, rule: str = "<=", note: str = "") -> dict[str, Any]:
    """A target check: value <= limit (or >= with rule '>='); `met` is None if value is NaN."""
    ok = None if value is None or (isinstance(value, float) and math.isnan(value)) else (
        value <= limit if rule == "<=" else value >= limit)
    return {"name": name, "value": value, "target": f"{rule} {limit}", "met": ok, "note": note}


def machine_info(peak_gflops: float) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "lightning": L.__version__, "omnivae": omnivae.__version__,
            "matmul_peak_gflops": round(peak_gflops, 1), "load_avg": os.getloadavg()}


def write_result(name: str, result: dict[str, Any], out: Path = RESULTS) -> Path:
    """benchmarks/results/<name>.json (keys: workload, quick, machine, runs, targets, skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


def save_result(result: dict[str, Any], t0: float, out: Path = RESULTS, summary: str = "") -> Path:
    """Stamp the seconds since t0 and write <workload>.json, or <workload>_quick.json for a --quick
    run (so a smoke test leaves the full figures alone); prints `summary` with the time and path."""
    result["seconds"] = round(time.perf_counter() - t0, 1)
    name = result["workload"]
    path = write_result(name + ("_quick" if result["quick"] else ""), result, out)
    print(f"{name}: {summary + ', ' if summary else ''}{result['seconds']} s -> {path}")
    return path


def new_result(name: str, quick: bool, **settings) -> dict[str, Any]:
    """An empty result; measures the matmul peak once (run_model measures it again per model)."""
    machine = machine_info(matmul_peak_gflops())
    machine["matmul_peak_samples"] = [machine["matmul_peak_gflops"]]
    return {"workload": name, "quick": quick, "machine": machine, "settings": settings,
            "runs": [], "targets": [], "skipped": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def finish(result: dict[str, Any], t0: float, out: Path, flop_target: float | None = None) -> Path:
    """Rate every run against the best matmul peak of the run, add the per-run targets (RSS
    flat; with flop_target, achieved FLOP/s >= flop_target x peak), write the JSON."""
    peak = max(result["machine"]["matmul_peak_samples"])
    result["machine"]["matmul_peak_gflops"] = peak
    per_run = []
    for run in result["runs"]:
        add_flop_rate(run, peak)
        if flop_target is not None:
            per_run.append(target(f"{run['model']}: achieved FLOP/s / matmul peak", run["peak_fraction"],
                                  flop_target, ">="))
        per_run.append(target(f"{run['model']}: RSS growth within epoch (%)",
                              run["rss_within_epoch"]["growth_pct"], 2.0))
        if "memory" in run:
            per_run.append(target(f"{run['model']}: peak RSS growth while training, beyond the training state, "
                                  "in step activations", run["memory"]["growth_in_activations"], 4.0))
    result["targets"] = per_run + result["targets"]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = write_result(result["workload"], result, out)
    met = [t["met"] for t in result["targets"]]
    print(f"{result['workload']}: {len(result['runs'])} runs, targets met {met.count(True)}/{len(met)}, "
          f"{result['seconds']} s -> {path}")
    return path
