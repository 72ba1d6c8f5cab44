"""user-path: `omnivae train` end to end, as a user runs it: one command in its own process, from
launch to the saved model, on generated folders (PNG files + captions in metadata.jsonl, written
by benchmarks/folders.py: 28x28 grey and 64x64 RGB) and on the mnist-label workload (MNIST
image + label, MoPoE, width 512, batch 256) as a whole run.

The run records where its time went (omnivae.train.timing: start-up, data, model, prepare,
fit = setup + steps + validation + checkpoints + teardown + other, priors (the conditional
prior's fit: encoding the training data, then its own optimiser steps), save, in
omnivae-run.json). Beside each run: the same networks (the model built from the
run's saved config) trained by a bare hand-written loop over the same in-memory training tensors
for the same number of steps (a random permutation sliced into batches, model.loss, Adam), then
its conditional prior fitted as the run fits it and the model saved: benchmarks/bare_train.py, run
as its own process and timed from launch to exit like the command.
Reported: command / bare script (both whole processes, the conv + GRU target: within 1.10x),
command / the bare script's loops alone, command / sum of steps, and train_run (command less start-up and
exit) / sum of its training steps, the model's and the prior's (the prior is a second training
stage); target: train_run within 10% of its training steps. Epochs: the library's default
unless --epochs (a short run shows the fixed costs: start-up, data, model building).

    python benchmarks/bench_user_path.py [--quick] [--threads N] [--epochs N] [--out benchmarks/results]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)
import folders
import yaml

NAME = "user-path"
FOLDERS = {"gray28-captions": {"size": 28, "mode": "L"}, "rgb64-captions": {"size": 64, "mode": "RGB"}}


def omnivae_command() -> list[str]:
    script = Path(sys.executable).with_name("omnivae")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from omnivae.cli import app; app()"]


def timed(command: list[str], what: str) -> tuple[float, str]:
    """Run `command` as its own process; (seconds from launch to exit, its stdout). Fails loudly."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall, proc.stdout


def run_train(args: list[str], run_dir: Path) -> dict:
    """`omnivae train ARGS --out run_dir`, timed from launch to exit; the run's training record."""
    wall, _ = timed([*omnivae_command(), "train", *args, "--out", str(run_dir), "--overwrite"], "omnivae train")
    record = json.loads((run_dir / "omnivae-run.json").read_text())["training"]
    return {"command_s": round(wall, 3), "record": record}


def bare_process(run_dir: Path, steps: int, threads: int, out: Path) -> dict:
    """benchmarks/bare_train.py as its own process: the run's networks trained by a bare loop for
    `steps` steps, its conditional prior fitted, the model saved; timed from launch to exit, with
    the loop's own split (model_s, prior_s)."""
    script = Path(__file__).with_name("bare_train.py")
    wall, stdout = timed([sys.executable, str(script), str(run_dir), str(steps), str(out), str(threads)],
                         "bare training script")
    return {**json.loads(stdout.strip().splitlines()[-1]), "process_s": round(wall, 3)}


def summarise(label: str, run: dict, bare: dict) -> dict:
    record = run["record"]
    phases = record["phases"]
    fit = phases["fit"]
    startup = phases["startup_s"] or 0.0
    train_run_s = sum(v for k, v in phases.items() if k.endswith("_s") and k != "startup_s") + sum(fit.values())
    exit_s = run["command_s"] - startup - train_run_s  # interpreter shutdown, the CLI's last lines
    steps_s = fit["steps_s"]
    prior = phases.get("prior_fit") or {}
    all_steps_s = steps_s + prior.get("steps_s", 0.0)  # the model's steps and the prior's (a second stage)
    out = {"workload": label, "command_s": run["command_s"], "steps": record["steps"], "epochs": record["epochs"],
           "examples": record["examples"], "phases": phases, "train_run_s": round(train_run_s, 3),
           "exit_s": round(exit_s, 3), "bare": bare,
           "bare_fixed_s": round(bare["process_s"] - bare["seconds"], 3),  # its imports, data, model, save, exit
           "command_over_bare_process": round(run["command_s"] / bare["process_s"], 3),
           "command_over_bare": round(run["command_s"] / bare["seconds"], 2),
           "command_over_steps": round(run["command_s"] / steps_s, 2),
           "train_run_over_training_steps": round(train_run_s / all_steps_s, 3),
           "train_run_over_steps": round(train_run_s / steps_s, 3),
           "train_run_without_priors_over_steps": round((train_run_s - phases["priors_s"]) / steps_s, 3),
           "steps_over_bare": round(steps_s / bare["model_s"], 3)}
    shares = {"startup": startup, "exit": exit_s, **{k[:-2]: v for k, v in phases.items() if k.endswith("_s")
                                                       and k != "startup_s"},
              **{f"fit.{k[:-2]}": v for k, v in fit.items()}}
    out["share_of_command"] = {k: round(v / run["command_s"], 3) for k, v in shares.items()}
    print(f"  {label}: command {run['command_s']:.1f} s = start-up {startup:.1f} + data {phases['data_s']:.1f} + "
          f"model {phases['model_s']:.1f} + prepare {phases['prepare_s']:.1f} + steps {steps_s:.1f} "
          f"({record['steps']}) + validation {fit['validation_s']:.1f} + checkpoints {fit['checkpoints_s']:.1f} + "
          f"other fit {fit['setup_s'] + fit['teardown_s'] + fit['other_s']:.1f} + priors {phases['priors_s']:.1f} + "
          f"save {phases['save_s']:.1f} + exit {exit_s:.1f}; bare script {bare['process_s']:.1f} s (its loops "
          f"{bare['seconds']:.1f} s); command/bare script {out['command_over_bare_process']}, train_run / training steps (model {steps_s:.1f} s + "
          f"prior {prior.get('steps_s', 0.0):.1f} s) {out['train_run_over_training_steps']}")
    return out


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None, epochs: int | None = None) -> Path:
    t0 = time.perf_counter()
    cores = c.setup(threads)
    n, epochs = (300, 1) if quick else (3000, epochs)
    settings = {"images": n, "max_epochs": epochs or "library default", "threads": cores,
                "train": "library defaults (max_epochs as given; batch_size 256 for mnist-label); progress bar "
                         "on, as a user sees it"}
    result = c.new_result(NAME, quick, **settings)
    common = ["--set", f"train.num_threads={cores}", *(["--set", f"train.max_epochs={epochs}"] if epochs else [])]
    with tempfile.TemporaryDirectory(prefix="omnivae-user-path-") as tmp:
        tmp = Path(tmp)
        for label, shape in FOLDERS.items():
            root = Path(tempfile.gettempdir()) / f"omnivae-user-path-{label}-{n}"
            written = folders.write_folder(root, n, shape["size"], shape["mode"], processes=cores, label=False)
            run = run_train(["--data", str(root), *common], tmp / label)
            bare = bare_process(tmp / label, run["record"]["steps"], cores, tmp / f"{label}-bare")
            entry = summarise(label, run, bare)
            entry["folder"] = written
            result["runs"].append(entry)
        mnist = c.mnist_dir()
        if (mnist / "train-images-idx3-ubyte.gz").is_file():
            import bench_mnist_label

            config = {"data": {"source": "mnist", "options": {"root": str(mnist), "limit": 2000 if quick else None}},
                      "model": bench_mnist_label.config("mopoe"), "train": {"batch_size": bench_mnist_label.BATCH}}
            path = tmp / "mnist-label.yaml"
            path.write_text(yaml.safe_dump(config))
            run = run_train(["--config", str(path), *common], tmp / "mnist-label")
            bare = bare_process(tmp / "mnist-label", run["record"]["steps"], cores, tmp / "mnist-label-bare")
            result["runs"].append(summarise("mnist-label (mopoe)", run, bare))
        else:
            result["skipped"].append({"model": "mnist-label", "reason": f"skipped: MNIST files not in {mnist}"})
    for run in result["runs"]:
        result["targets"].append(c.target(
            f"{run['workload']}: train_run / sum of its training steps (the model's and the prior's)",
            run["train_run_over_training_steps"], 1.10,
            note=f"over the model's steps alone: {run['train_run_over_steps']} (without the prior fit "
                 f"{run['train_run_without_priors_over_steps']}); command / bare loop {run['command_over_bare']}"))
        if "folder" in run:  # the conv + GRU user-path workloads (generated folders)
            result["targets"].append(c.target(
                f"{run['workload']}: the command / the bare script (launch to saved model, both)",
                run["command_over_bare_process"], 1.10,
                note=f"against the bare script's loops alone (no start-up, data, saving): {run['command_over_bare']}; "
                     f"the command's steps / the bare loop's: {run['steps_over_bare']}"))
    return c.save_result(result, t0, out, f"{len(result['runs'])} runs")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 images, 1 epoch")
    parser.add_argument("--out", type=Path, default=c.RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--epochs", type=int, default=None, help="train.max_epochs (default: the library's)")
    args = parser.parse_args()
    main(args.quick, args.out, args.threads, args.epochs)
