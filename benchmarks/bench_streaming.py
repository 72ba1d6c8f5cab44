"""streaming: `omnivae train` on a folder larger than it should hold in memory, read batch by batch
from disk (data.stream: true, DataLoader workers decode the PNG files), against the in-memory
path on a subset that fits.

The folder: 200,000 64x64 RGB PNG images + a caption and a shape label each (benchmarks/folders.py,
written by several processes into /tmp and reused); the subset: its first 20,000 rows (a
metadata file of their own beside a link to the same images). Both paths train the same model
(MoPoE, its defaults for these modalities, no conditional prior) for the same number of steps,
one command each. While a command runs, the resident memory of its process and of every worker
process is sampled from /proc (RSS summed over the processes, which counts pages the workers
share with the parent once per process, and PSS, which splits them). Throughput is examples per
second of the training steps, from the run's own record (omnivae-run.json "phases").
Targets: memory flat (growth <= 5% over training) and under 2 GB; streaming >= 80% of in-memory.

    python benchmarks/bench_streaming.py [--quick] [--threads N] [--workers N] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)
import folders

NAME = "streaming"
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(x) for x in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
    return found


def memory_of(pid: int) -> dict[str, float] | None:
    """{"main_rss", "rss", "pss", "processes"} in MB for pid's process tree; None once it has exited."""
    rss = pss = 0.0
    main = None
    pids = process_tree(pid)
    for p in pids:
        try:
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except (OSError, ValueError, IndexError):
            continue
        rss += pages * PAGE_MB
        pss += next((int(line.split()[1]) / 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0.0)
        main = pages * PAGE_MB if p == pid else main
    return None if main is None else {"main_rss": main, "rss": rss, "pss": pss, "processes": len(pids)}


def run_sampled(args: list[str], run_dir: Path, every: float = 0.5) -> dict:
    """`omnivae train ARGS --out run_dir` with its memory sampled every `every` seconds."""
    cmd = [*omnivae_command(), "train", *args, "--out", str(run_dir), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    samples: list[tuple[float, dict]] = []

    def sample() -> None:
        while proc.poll() is None:
            got = memory_of(proc.pid)
            if got is not None:
                samples.append((time.perf_counter() - start, got))
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"omnivae train failed ({proc.returncode}):\n{output[-3000:]}")
    record = json.loads((run_dir / "omnivae-run.json").read_text())["training"]
    return {"command_s": round(wall, 2), "record": record, "samples": samples}


def omnivae_command() -> list[str]:
    script = Path(sys.executable).with_name("omnivae")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from omnivae.cli import app; app()"]


def training_window(record: dict) -> tuple[float, float]:
    """(start, end) of the training steps in seconds after launch, from the run's phases."""
    p = record["phases"]
    start = (p["startup_s"] or 0.0) + p["data_s"] + p["model_s"] + p["prepare_s"] + p["fit"]["setup_s"]
    fit = p["fit"]
    return start, start + fit["steps_s"] + fit["validation_s"] + fit["checkpoints_s"] + fit["other_s"]


def summary(label: str, run: dict, batch_size: int) -> dict:
    record = run["record"]
    fit = record["phases"]["fit"]
    begin, end = training_window(record)
    during = [m for t, m in run["samples"] if begin <= t <= end] or [m for _, m in run["samples"]]
    memory = {}
    for key in ("rss", "pss", "main_rss"):
        values = [m[key] for m in during]
        q = max(1, len(values) // 4)
        first, last = statistics.median(values[:q]), statistics.median(values[-q:])
        memory[key] = {"start_mb": round(first, 1), "end_mb": round(last, 1), "peak_mb": round(max(values), 1),
                       "growth_pct": round(100 * (last - first) / first, 2)}
    out = {"path": label, "command_s": run["command_s"], "steps": record["phases"]["fit_steps"],
           "examples": record["examples"], "phases": record["phases"],
           "examples_per_s": round(record["phases"]["fit_steps"] * batch_size / fit["steps_s"], 1),
           "memory": memory, "processes": max(m["processes"] for m in during), "samples_in_training": len(during),
           "memory_over_time": [[round(t, 1), round(m["rss"]), round(m["pss"])]
                                for t, m in run["samples"][::max(1, len(run["samples"]) // 300)]]}
    print(f"  {label}: {out['examples_per_s']} examples/s over {out['steps']} steps; RSS {memory['rss']['start_mb']} -> "
          f"{memory['rss']['end_mb']} MB (peak {memory['rss']['peak_mb']}, {out['processes']} processes), PSS "
          f"peak {memory['pss']['peak_mb']} MB; command {run['command_s']} s")
    return out


def subset_folder(root: Path, n: int) -> Path:
    """The first n rows of `root` as a folder of their own (its images linked, not copied)."""
    sub = root.with_name(f"{root.name}-first-{n}")
    sub.mkdir(exist_ok=True)
    if not (sub / "images").exists():
        (sub / "images").symlink_to(root / "images")
    with open(root / "metadata.jsonl") as f:
        lines = [next(f) for _ in range(n)]
    (sub / "metadata.jsonl").write_text("".join(lines))
    return sub


def main() -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images, 1,000 in memory, 10 steps")
    parser.add_argument("--out", type=Path, default=c.RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the training process")
    parser.add_argument("--workers", type=int, nargs="*", default=[1],
                        help="DataLoader workers of streamed runs beside the one with the library's default "
                             "(a worker per core the torch threads leave free)")
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--in-memory", type=int, default=20_000, help="rows of the in-memory subset")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    n, subset, steps = (2000, 1000, 10) if args.quick else (args.images, args.in_memory, args.steps)
    t0 = time.perf_counter()
    threads = args.threads or os.cpu_count() or 1
    result = c.new_result(NAME, args.quick, images=n, in_memory_rows=subset, steps=steps, workers=args.workers,
                          batch_size=args.batch_size, threads=threads)
    root = Path(tempfile.gettempdir()) / f"omnivae-stream-{n // 1000}k"
    result["folder"] = folders.write_folder(root, n, 64, "RGB", processes=max(2, os.cpu_count() or 1))
    print(f"folder {root}: {n} images, {result['folder']['bytes'] / 2**30:.2f} GB on disk, "
          + ("reused" if result["folder"]["reused"] else f"written in {result['folder']['seconds']} s"))
    common = ["--set", f"train.max_steps={steps}", "--set", "train.max_epochs=1000", "--set", "model.model=mopoe",
              "--set", "model.conditional_prior=null", "--set", f"train.batch_size={args.batch_size}",
              "--set", f"train.num_threads={threads}", "--set", "train.progress=false"]
    with tempfile.TemporaryDirectory(prefix="omnivae-streaming-") as tmp:
        tmp = Path(tmp)
        memory = run_sampled(["--data", str(subset_folder(root, subset)), *common], tmp / "memory")
        stream = run_sampled(["--data", str(root), *common, "--set", "data.stream=true"], tmp / "stream")
        more = {w: run_sampled(["--data", str(root), *common, "--set", "data.stream=true",
                                "--set", f"train.num_workers={w}"], tmp / f"stream-{w}") for w in args.workers}
    result["runs"] = [summary(f"in memory ({subset} rows)", memory, args.batch_size),
                      summary(f"streamed ({n} rows, library default workers)", stream, args.batch_size),
                      *(summary(f"streamed ({n} rows, {w} workers)", run, args.batch_size) for w, run in more.items())]
    result["runs"][1]["workers"] = result["runs"][1]["processes"] - 1  # as the library chose them
    for w, run in zip(more, result["runs"][2:]):
        run["workers"] = w
        run["over_in_memory"] = round(run["examples_per_s"] / result["runs"][0]["examples_per_s"], 3)
    mem, streamed = result["runs"][:2]
    ratio = round(streamed["examples_per_s"] / mem["examples_per_s"], 3)
    result["stream_over_memory"] = ratio
    result["targets"] = [
        c.target("streamed: RSS growth over training, all processes (%)", streamed["memory"]["rss"]["growth_pct"], 5.0),
        c.target("streamed: peak RSS, all processes (MB)", streamed["memory"]["rss"]["peak_mb"], 2048.0,
                 note=f"PSS peak {streamed['memory']['pss']['peak_mb']} MB"),
        c.target("streamed / in-memory examples per second", ratio, 0.8, ">="),
        *(t for run in result["runs"][2:] for t in (
            c.target(f"streamed, {run['workers']} workers: peak RSS, all processes (MB)",
                     run["memory"]["rss"]["peak_mb"], 2048.0, note=f"PSS peak {run['memory']['pss']['peak_mb']} MB"),
            c.target(f"streamed, {run['workers']} workers / in-memory examples per second", run["over_in_memory"],
                     0.8, ">=")))]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = c.write_result(NAME + ("_quick" if args.quick else ""), result, args.out)
    print(f"{NAME}: stream / memory throughput {ratio}; {result['seconds']} s -> {path}")
    return path


if __name__ == "__main__":
    main()
