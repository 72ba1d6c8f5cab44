"""text-captions quality: caption models on the built-in shapes data at the "medium" level
(captions name shape, size and colour in one of three templates), MoPoE image + text with
the demo's options (omnivae.tasks.demo.demo_config), once with GRU and once with Transformer
text encoder and decoder, each trained for a fixed wall-clock budget.

Reported on the run's held-out test split:
  image -> caption (greedy, from the image's posterior mean): attribute accuracy of the parsed
    caption (shapes.parse_caption, per attribute and "all" three right), exact match and token
    accuracy against the reference caption, corpus BLEU, and "valid caption" (equal to one of
    the three template renderings of the true attributes: exact match cannot exceed about 1/3,
    since the reference's template is random and the image does not show it). The word-level
    tokenizer decodes "triangle, big" as "triangle , big": exact match and token accuracy are
    also given with that space removed, and "valid caption" ignores it;
  caption -> image: attributes of the generated image read by CNN classifiers trained on the
    training images (metrics.coherence), next to those classifiers' accuracy on real images;
  collapse checks: active units of the joint and of the text-only posterior, the MI estimate,
    and the distinct-caption ratio (distinct generated / distinct reference captions).

    python benchmarks/bench_text.py [--minutes 3] [--quick] [--threads 1] [--out benchmarks/results]

Writes <out>/text.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from omnivae.data.shapes import LEVELS, caption_for, parse_caption
from omnivae.data.tensors import TensorData
from omnivae.metrics.captions import attribute_accuracy, bleu, exact_match, normalise, token_accuracy
from omnivae.metrics.coherence import build_scorers, caption_scorer, conditional_coherence
from omnivae.metrics.collapse import active_units, mutual_information
from omnivae.run import train_run
from omnivae.tasks.demo import demo_config

RESULTS = Path(__file__).resolve().parent / "results"
LEVEL, ATTRS = "medium", ("shape", "color", "size")
VARIANTS = {"gru": {"encoder": "gru", "decoder": "gru"},
            "transformer": {"encoder": "transformer", "decoder": "transformer", "heads": 4}}


def run_config(variant: str, minutes: float, n: int, seed: int, quick: bool, threads: int) -> dict:
    config = demo_config(minutes, LEVEL, "mopoe", n, seed, progress=False)
    config["model"]["modalities"]["text"].update(VARIANTS[variant])
    config["train"].update(tensorboard=False, log_every_n_steps=50, num_threads=threads)
    if quick:
        config["train"].update(max_epochs=1)
    return config


def tidy(text: str) -> str:
    """No space before punctuation (what the word-level tokenizer's decoding puts there)."""
    return re.sub(r"\s+([,.;:!?])", r"\1", text)


def valid_captions(attrs: dict[str, np.ndarray]) -> list[set[str]]:
    """Per example, the captions every template of the level gives for its true attributes."""
    templates = LEVELS[LEVEL].templates
    out = []
    for i in range(len(attrs["shape"])):
        row = {a: int(attrs[a][i]) for a in attrs}
        out.append({normalise(caption_for(row, LEVEL, _Pick(t))) for t in range(len(templates))})
    return out


class _Pick:
    """Stands in for the rng caption_for takes, to pick template t."""

    def __init__(self, t: int):
        self.t = t

    def integers(self, _n):
        return self.t


@torch.no_grad()
def evaluate(model, train, test, scorers) -> dict:
    data = TensorData.from_raw(model, test)
    refs = list(test.modalities["text"])
    truth = {a: np.asarray(test.targets[a]) for a in ATTRS}
    preds = []
    for i in range(0, len(test), 500):
        batch = data.batch(torch.arange(i, min(len(test), i + 500)))
        preds += model.generate(batch, given=["image"], targets=["text"], mean=True)["text"]
    attr = attribute_accuracy(preds, truth, lambda t: parse_caption(t, LEVEL))
    valid = valid_captions(truth)
    coherence = conditional_coherence(model, data, scorers, n_max=len(test))
    real_images = scorers["image"](data.data["image"])
    classifier = {a: float((real_images[a] == torch.as_tensor(truth[a])).float().mean()) for a in ATTRS}
    batch = data.batch()
    mu, logvar, present = model.encode_unimodal(batch)
    joint = model.fuse(mu, logvar, present)
    text_mu = mu[model.names.index("text")]
    gen = torch.Generator().manual_seed(0)
    distinct_refs = len({normalise(r) for r in refs})
    distinct_preds = len({normalise(p) for p in preds})
    return {
        "image_to_caption": {
            "attribute_accuracy": attr,
            "exact_match": exact_match(preds, refs),
            "token_accuracy": token_accuracy(preds, refs),
            "exact_match_tidy": exact_match([tidy(p) for p in preds], refs),
            "token_accuracy_tidy": token_accuracy([tidy(p) for p in preds], refs),
            "bleu": bleu(preds, refs),
            "valid_caption": float(np.mean([normalise(tidy(p)) in v for p, v in zip(preds, valid)])),
            "examples": [{"reference": r, "generated": p} for r, p in zip(refs[:8], preds[:8])],
        },
        "caption_to_image": {"attribute_accuracy": coherence.get("text->image", {}),
                             "classifier_on_real_images": classifier},
        "image_to_caption_coherence": coherence.get("image->text", {}),
        "collapse": {
            "latent_dim": int(joint.mu.shape[1]),
            "active_units_joint": active_units(joint.mu),
            "active_units_text": active_units(text_mu),
            "active_units_image": active_units(mu[model.names.index("image")]),
            "mi_joint": mutual_information(joint.mu, joint.logvar, generator=gen),
            "mi_text": mutual_information(text_mu, logvar[model.names.index("text")], generator=gen),
            "distinct_generated": distinct_preds,
            "distinct_references": distinct_refs,
            "distinct_caption_ratio": distinct_preds / distinct_refs,
        },
    }


def table(runs: list[dict]) -> str:
    def pct(x):
        return f"{100 * x:.1f}"

    def i2c(r):
        return r["image_to_caption"]

    def c2i(r, a):
        return pct(r["caption_to_image"]["attribute_accuracy"].get(a, float("nan")))

    def collapse(fmt):
        return lambda r: fmt.format(**r["collapse"])

    rows = [
        ("training: minutes / epochs / steps", lambda r: f"{r['train_minutes']:.1f} / {r['epochs']} / {r['steps']}"),
        ("image->caption attribute acc, all three (%)", lambda r: pct(i2c(r)["attribute_accuracy"]["all"])),
        *[(f"image->caption {a} acc (%)", lambda r, a=a: pct(i2c(r)["attribute_accuracy"][a])) for a in ATTRS],
        ("image->caption valid caption (%)", lambda r: pct(i2c(r)["valid_caption"])),
        ("image->caption exact match (%) [ceiling ~33]", lambda r: pct(i2c(r)["exact_match"])),
        ("... with no space before punctuation (%)", lambda r: pct(i2c(r)["exact_match_tidy"])),
        ("image->caption token accuracy (%)", lambda r: pct(i2c(r)["token_accuracy"])),
        ("... with no space before punctuation (%)", lambda r: pct(i2c(r)["token_accuracy_tidy"])),
        ("image->caption BLEU", lambda r: f"{i2c(r)['bleu']:.1f}"),
        ("caption->image attribute acc, all three (%)", lambda r: c2i(r, "all")),
        *[(f"caption->image {a} acc (%)", lambda r, a=a: c2i(r, a)) for a in ATTRS],
        ("image classifier on real test images, shape/color/size (%)",
         lambda r: " / ".join(pct(r["caption_to_image"]["classifier_on_real_images"][a]) for a in ATTRS)),
        ("active units: joint / text / image",
         collapse("{active_units_joint} / {active_units_text} / {active_units_image} (of {latent_dim})")),
        ("MI estimate, joint / text (nats)", collapse("{mi_joint:.2f} / {mi_text:.2f}")),
        ("distinct captions: generated / references (ratio)",
         collapse("{distinct_generated} / {distinct_references} ({distinct_caption_ratio:.2f})")),
    ]
    lines = ["| metric | " + " | ".join(r["model"] for r in runs) + " |", "|---|" + "---|" * len(runs)]
    lines += ["| " + name + " | " + " | ".join(fn(r) for r in runs) + " |" for name, fn in rows]
    return "\n".join(lines)


def main(minutes: float = 3.0, quick: bool = False, out: Path = RESULTS, n: int = 6000, seed: int = 0,
         threads: int = 1) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if quick:
        n, minutes = 600, min(minutes, 0.5)
    result = {"workload": "text-captions", "quick": quick,
              "settings": {"level": LEVEL, "n": n, "seed": seed, "minutes_per_model": minutes,
                           "model": "mopoe", "test_fraction": 0.1, "decoding": "greedy, posterior mean",
                           "threads": threads},
              "machine": {"cores": os.cpu_count(), "load_average_1min_at_start": load_before,
                          "python": platform.python_version(), "torch": torch.__version__},
              "runs": []}
    scorers = None
    with tempfile.TemporaryDirectory(prefix="bench_text_") as tmp:
        for variant in VARIANTS:
            start = time.perf_counter()
            config = run_config(variant, minutes, n, seed, quick, threads)
            run = train_run(config, Path(tmp) / variant, overwrite=True)
            trained = time.perf_counter() - start
            model = run.model.eval()
            if scorers is None:  # the image classifiers depend on the data only: train them once
                scorers = build_scorers(model, run.splits.train, epochs=1 if quick else 3, seed=seed)
            scorers = {**scorers, "text": caption_scorer(model.modalities["text"], run.splits.train)}
            metrics = evaluate(model, run.splits.train, run.splits.test, scorers)
            epochs, steps = _progress(Path(tmp) / variant)
            result["runs"].append({"model": variant, "config": config, "train_minutes": trained / 60,
                                   "epochs": epochs, "steps": steps,
                                   "parameters": sum(p.numel() for p in model.parameters()),
                                   "test_examples": len(run.splits.test), **metrics,
                                   "seconds": time.perf_counter() - start})
            print(f"{variant}: trained {trained / 60:.1f} min, image->caption all-attribute accuracy "
                  f"{metrics['image_to_caption']['attribute_accuracy']['all']:.3f}", flush=True)
    result["targets"] = [{"name": f"{r['model']}: image->caption attribute accuracy (all three)",
                          "value": r["image_to_caption"]["attribute_accuracy"]["all"], "target": 0.9,
                          "met": r["image_to_caption"]["attribute_accuracy"]["all"] > 0.9} for r in result["runs"]]
    result["seconds"] = time.perf_counter() - t0
    result["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text.json").write_text(json.dumps(result, indent=2))
    print(table(result["runs"]))
    print(f"\nwritten {out / 'text.json'} in {result['seconds'] / 60:.1f} min")
    return result


def _progress(run_dir: Path) -> tuple[int, int]:
    """Epochs and optimiser steps of a finished run, from its last checkpoint."""
    from omnivae.train.checkpoint import read_checkpoint

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return 0, 0
    state = read_checkpoint(ckpt)
    return int(state.get("epoch", 0)) + 1, int(state.get("global_step", 0))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per model (default 3)")
    parser.add_argument("--quick", action="store_true", help="a few steps on 600 examples (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for text.json")
    parser.add_argument("--n", type=int, default=6000, help="examples generated (train + val + test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine more threads run slower)")
    args = parser.parse_args()
    main(args.minutes, args.quick, args.out, args.n, args.seed, args.threads)
