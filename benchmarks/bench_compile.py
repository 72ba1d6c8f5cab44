"""compile: how much of a training step torch.compile can take, and the GRU decoder's one call.

Step variants, each a bare loop over the same in-memory batches (index slices), timed in
alternating rounds so drifts of the machine hit every variant alike:
  eager            model.loss, backward, fused Adam: the library's default step
  objective        torch.compile(model.loss) (forward and, through AOTAutograd, backward), fused
                   Adam: what `train.compile: true` does
  whole step       the compiled objective and a compiled Adam step (torch.compile(opt.step), the
                   optimizer's update as generated code instead of the fused kernel)
Workloads: mnist-label (MoPoE, MLPs of width 512, batch 256) and the folder default for 64x64
RGB images + captions (MoPoE, conv image networks, GRU text networks, batch 128).

GRU decoding with teacher forcing: the decoder's nn.GRU over the whole caption (one aten::gru
call) against the same weights stepped token by token in Python (nn.GRUCell), forward and
backward, at the caption workload's sizes; and the decoder's share of the eager step.

    python benchmarks/bench_compile.py [--quick] [--threads N] [--out benchmarks/results]

--quick: a few steps, and the compiled variants on the first workload only.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)
import torch
from torch import nn

from omnivae.batch import Batch
from omnivae.data.tensors import TensorData
from omnivae.models import build_model
from omnivae.run import RunConfig, resolve_model_config

NAME = "compile"


def batches(data: TensorData, batch_size: int, count: int, seed: int = 0) -> list[Batch]:
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=gen)
    return [data.batch(perm[i * batch_size:(i + 1) * batch_size]) for i in range(count)]


class Step:
    """One training-step variant over its own copy of the model (same initial weights)."""

    def __init__(self, model, variant: str, lr: float = 1e-3):
        import copy

        self.model = copy.deepcopy(model).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.objective = self.model.loss if variant == "eager" else torch.compile(self.model.loss, dynamic=False)
        if variant == "whole step":
            self.opt = torch.optim.Adam(params, lr=lr, foreach=False)
            self.update = torch.compile(self.opt.step)
        else:
            self.opt = torch.optim.Adam(params, lr=lr, fused=True)
            self.update = self.opt.step

    def __call__(self, batch: Batch) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.objective(batch).total.backward()
        self.update()


def time_steps(step: Step, work: list[Batch]) -> list[float]:
    times = []
    for b in work:
        t = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t)
    return times


def compare_steps(model, data: TensorData, batch_size: int, rounds: int, steps: int, warmup: int,
                  names=("eager", "objective", "whole step")) -> dict:
    work = batches(data, batch_size, steps)
    variants = {}
    for name in names:
        t = time.perf_counter()
        variants[name] = Step(model, name)
        first = time_steps(variants[name], work[:1])[0]  # a compiled variant compiles here
        time_steps(variants[name], work[:warmup])
        variants[name].first_step_s = round(first, 2)
        print(f"    {name}: first step {first:.2f} s (built in {time.perf_counter() - t:.1f} s)")
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            times[name].append(statistics.median(time_steps(step, work)))
    base = times["eager"]
    return {name: {"step_ms": round(1000 * statistics.median(t), 2), "first_step_s": variants[name].first_step_s,
                   "speedup": c.paired_ratio(base, t)} for name, t in times.items()}


def unrolled_gru(gru: nn.GRU, inp: torch.Tensor, h0: torch.Tensor, cells: list[nn.GRUCell]) -> torch.Tensor:
    """The same recurrence as gru(inp, h0), one token at a time in Python."""
    out, hs = inp, list(h0)
    for layer, cell in enumerate(cells):
        h, steps = hs[layer], []
        for t in range(out.shape[1]):
            h = cell(out[:, t], h)
            steps.append(h)
        out = torch.stack(steps, 1)
    return out


def cells_of(gru: nn.GRU) -> list[nn.GRUCell]:
    cells = []
    for layer in range(gru.num_layers):
        cell = nn.GRUCell(gru.input_size if layer == 0 else gru.hidden_size, gru.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(gru, f"{name}_l{layer}"))
        cells.append(cell)
    return cells


def gru_decoder(model, batch: Batch, reps: int) -> dict | None:
    """The caption decoder's GRU: one call against a Python loop over tokens (forward + backward)."""
    name = next((n for n, m in model.modalities.items()
                 if isinstance(getattr(getattr(m, "decoder", None), "gru", None), nn.GRU)), None)
    if name is None:
        return None
    gru = model.modalities[name].decoder.gru
    tokens = batch.data[name]
    b, t = tokens.shape
    inp = torch.randn(b, t, gru.input_size)
    h0 = torch.randn(gru.num_layers, b, gru.hidden_size)
    cells = cells_of(gru)
    with torch.no_grad():
        fused, _ = gru(inp, h0)
        assert torch.allclose(fused, unrolled_gru(gru, inp, h0, cells), atol=1e-5), "unrolled GRU differs"

    def one_call():
        gru.zero_grad(set_to_none=True)
        gru(inp, h0)[0].sum().backward()

    def loop():
        for cell in cells:
            cell.zero_grad(set_to_none=True)
        unrolled_gru(gru, inp, h0, cells).sum().backward()

    fused_ms, loop_ms = [], []
    for _ in range(5):
        fused_ms.append(c.time_ms(one_call, reps))
        loop_ms.append(c.time_ms(loop, reps))
    return {"batch": b, "tokens": t, "input": gru.input_size, "hidden": gru.hidden_size, "layers": gru.num_layers,
            "one_call_ms": round(statistics.median(fused_ms), 3), "token_loop_ms": round(statistics.median(loop_ms), 3),
            "loop_over_call": c.paired_ratio(loop_ms, fused_ms)}


def workloads(quick: bool):
    """(label, model, TensorData, batch size) for mnist-label and the 64x64 caption folder default."""
    import folders

    from omnivae.data.folder import load_folder

    mnist = c.load_mnist_or_none("train", limit=2048 if quick else 12_800)
    if mnist is not None:
        import bench_mnist_label

        model = build_model(bench_mnist_label.config("mopoe"), mnist)
        yield "mnist-label, MoPoE", model, TensorData.from_raw(model, mnist), bench_mnist_label.BATCH
    import tempfile

    n = 512 if quick else 2048
    root = Path(tempfile.gettempdir()) / f"omnivae-compile-rgb64-{n}"
    folders.write_folder(root, n, 64, "RGB", processes=2, label=False)
    raw = load_folder(root)
    config = resolve_model_config(RunConfig.from_dict({}).model, raw)  # as `omnivae train --data` builds it
    model = build_model(config, raw)
    yield f"64x64 RGB + captions, {config.model} (conv + GRU)", model, TensorData.from_raw(model, raw), 128


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None) -> Path:
    t0 = time.perf_counter()
    cores = c.setup(threads)
    rounds, steps, warmup = (2, 3, 2) if quick else (7, 10, 5)
    result = c.new_result(NAME, quick, threads=cores, rounds=rounds, steps_per_round=steps, warmup=warmup)
    for i, (label, model, data, batch_size) in enumerate(workloads(quick)):
        print(f"  {label}")
        # --quick compiles the first workload only (compiling the conv + GRU model takes a minute cold)
        names = ("eager",) if quick and i else ("eager", "objective", "whole step")
        entry = {"workload": label, "batch_size": batch_size,
                 "steps": compare_steps(model, data, batch_size, rounds, steps, warmup, names)}
        gru = gru_decoder(model, data.batch(torch.arange(batch_size)), 3 if quick else 20)
        if gru is not None:
            entry["gru_decoder"] = gru
            entry["gru_share_of_eager_step"] = round(gru["one_call_ms"] / entry["steps"]["eager"]["step_ms"], 3)
        result["runs"].append(entry)
        print(f"    {entry}")
    for run in (r for r in result["runs"] if "whole step" in r["steps"]):
        whole = run["steps"]["whole step"]["speedup"]
        result["targets"].append(c.target(f"{run['workload']}: whole-step compile speed-up over eager", whole, 1.0,
                                          ">=", note=f"objective only: {run['steps']['objective']['speedup']}; "
                                                     "on by default only where it wins"))
    return c.save_result(result, t0, out, f"{len(result['runs'])} workloads")


if __name__ == "__main__":
    args = c.parse_args(__doc__)
    main(args.quick, args.out, args.threads)
