"""Cross-modal accuracy of every multimodal model on the built-in shapes data after the
same fixed, short training budget (a comparison, not a tuned leaderboard).

    python benchmarks/bench_zoo.py [--epochs 6] [--level easy] [--quick]

Writes benchmarks/results/zoo.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from omnivae.metrics.coherence import build_scorers, conditional_coherence, joint_coherence
from omnivae.data.tensors import TensorData
from omnivae.run import train_run
from omnivae.tasks.demo import demo_config

MODELS = ["mvae", "mmvae", "mopoe", "jmvae", "mvtcae", "mmvae_plus", "multimodal_ae"]
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(name: str, args) -> dict:
    config = demo_config(None, args.level, name, args.n, args.seed, progress=False, max_epochs=args.epochs)
    config["train"].update(patience=None, tensorboard=False, num_threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train_run(config, Path(tmp) / "run")
        seconds = time.perf_counter() - start
    model, splits = result.model, result.splits
    scorers = build_scorers(model, splits.train, epochs=3, seed=args.seed)
    test = TensorData.from_raw(model, splits.test)
    coherence = conditional_coherence(model, test, scorers, n_max=args.n_eval)
    joint = joint_coherence(model, scorers, n=args.n_eval)
    return {"model": name, "train_seconds": round(seconds, 1),
            "text_to_image": coherence["text->image"]["all"], "image_to_text": coherence["image->text"]["all"],
            "joint": joint.get("all"), "coherence": coherence}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--level", default="easy")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--n-eval", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the script runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.n, args.n_eval = 1, 300, 60
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [run_one(name, args) for name in args.models]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("zoo_quick.json" if args.quick else "zoo.json")
    out.write_text(json.dumps({"benchmark": "zoo", "level": args.level, "epochs": args.epochs, "n": args.n,
                               "chance_all_attributes": 1 / 12 if args.level == "easy" else None,
                               "rows": rows}, indent=2))
    print(f"| model | text->image | image->text | joint samples | train s |\n|---|---|---|---|---|")
    for r in rows:
        joint = "n/a" if r["joint"] is None else f"{r['joint']:.3f}"
        print(f"| {r['model']} | {r['text_to_image']:.3f} | {r['image_to_text']:.3f} | {joint} | {r['train_seconds']} |")
    return rows


if __name__ == "__main__":
    main()
