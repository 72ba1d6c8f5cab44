"""Semi-supervised MNIST: M2 (omnivae.models.m2) with 100 and 1,000 labels (balanced over the
digits, omnivae.data.labelled.balanced_rows), scored by the accuracy of q(y|x) on the 10,000
test images; beside it, the same classifier network trained on the labelled examples alone.

    python benchmarks/bench_semi_supervised.py [--quick] [--threads 1] [--epochs 3] [--alpha auto]

Networks (MLPs, as the paper's MNIST M2): x's encoder 784-500-2(50+10), q(z|x,y) an MLP with
one hidden layer of 500 over its output and the one-hot class, p(x|y,z) (50+10)-500-784
Bernoulli, q(y|x) 784-500-500-10; latent 50; Adam 3e-4 (the paper's rate). Each step takes
100 unlabelled images (every training image once per epoch, labels hidden) and 50 labelled
ones drawn from the labelled set, through the model's own loss (labelled rows oversampled, as
the paper's code does, so every batch anchors the classes). The baseline trains the
classifier with cross-entropy on the labelled examples only, for as many steps, batches of up
to 50, with the model's early weights (same seed). Writes benchmarks/results/semi-supervised.json
(semi-supervised_quick.json with --quick: 2,000 training images, 60 steps).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

from omnivae.batch import Batch  # noqa: E402
from omnivae.data.labelled import balanced_rows  # noqa: E402
from omnivae.models import build_model  # noqa: E402

NAME, LABELS, LR, UNLABELLED_BATCH, LABELLED_BATCH = "semi-supervised", (100, 1000), 3e-4, 100, 50
PAPER = {100: 0.8803, 1000: 0.9640}  # Kingma et al. 2014, table 1, M2 alone (error 11.97% and 3.60%)


def config(alpha: float) -> dict:
    return {"model": "m2", "latent_dim": 50, "alpha": alpha, "hidden": [500], "classifier_features": 500,
            "modalities": {"image": {"kind": "image", "shape": [1, 28, 28], "arch": "mlp", "hidden": [500],
                                     "likelihood": "bernoulli"},
                           "label": {"kind": "categorical", "num_classes": 10, "hidden": [16]}}}


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model.classify({"image": images[i:i + 1000]}).argmax(-1) for i in range(0, len(images), 1000)])
    model.train()
    return float((pred == labels).float().mean())


def train_m2(model, images, labels, kept: np.ndarray, steps: int, seed: int) -> list[float]:
    """`steps` steps of 100 unlabelled + 50 labelled rows; the loss of each step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    kept = torch.from_numpy(kept)
    order, losses = torch.randperm(len(images), generator=gen), []
    for step in range(steps):
        start = (step * UNLABELLED_BATCH) % len(images)
        if start + UNLABELLED_BATCH > len(images):
            order, start = torch.randperm(len(images), generator=gen), 0
        u = order[start:start + UNLABELLED_BATCH]
        lab = kept[torch.randint(len(kept), (LABELLED_BATCH,), generator=gen)] if len(kept) > LABELLED_BATCH \
            else kept
        rows = torch.cat([u, lab])
        mask = torch.cat([torch.zeros(len(u), dtype=torch.bool), torch.ones(len(lab), dtype=torch.bool)])
        opt.zero_grad(set_to_none=True)
        out = model.loss(Batch({"image": images[rows], "label": labels[rows]}, {"label": mask}))
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    return losses


def train_baseline(model, images, labels, kept: np.ndarray, steps: int, seed: int) -> None:
    """The classifier q(y|x) alone: cross-entropy on the labelled examples."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.classifier.parameters(), lr=LR)
    kept = torch.from_numpy(kept)
    for _ in range(steps):
        rows = kept[torch.randperm(len(kept), generator=gen)[:LABELLED_BATCH]]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model.class_logits(images[rows]), labels[rows]).backward()
        opt.step()


def alpha_for(alpha: str, n: int, count: int) -> float:
    """A number, or "auto": 0.1 * N / labels, the weight that common M2 reimplementations give the
    labelled cross-entropy when losses are per-example means (the paper's alpha = 0.1 N on sums)."""
    return 0.1 * n / count if alpha == "auto" else float(alpha)


def main(quick: bool, out: Path, threads: int | None, epochs: int, alpha: str) -> Path:
    t0 = time.perf_counter()
    c.setup(threads)
    train = c.load_mnist_or_none("train", limit=2000 if quick else None)
    result = c.new_result(NAME if not quick else f"{NAME}_quick", quick, epochs=epochs, alpha=alpha, lr=LR,
                          unlabelled_batch=UNLABELLED_BATCH, labelled_batch=LABELLED_BATCH, model=config(0.1))
    if train is None:
        result["skipped"].append({"model": "all", "reason": f"skipped: MNIST files not found in {c.mnist_dir()}"})
        return c.write_result(result["workload"], result, out)
    test = c.load_mnist_or_none("test", limit=1000 if quick else None)
    images, labels = (torch.from_numpy(train.modalities[k]) for k in ("image", "label"))
    test_images, test_labels = (torch.from_numpy(test.modalities[k]) for k in ("image", "label"))
    steps = 60 if quick else epochs * (len(images) // UNLABELLED_BATCH)
    result["settings"]["steps"] = steps
    for count in LABELS:
        kept = balanced_rows(labels.numpy(), count, seed=0)
        weight = alpha_for(alpha, len(images), count)
        row = {"labels": count, "alpha": weight, "steps": steps, "paper_m2_accuracy": PAPER[count]}
        torch.manual_seed(0)
        baseline = build_model(config(weight))
        started = time.perf_counter()
        train_baseline(baseline, images, labels, kept, steps, seed=0)
        row["baseline_accuracy"] = round(accuracy(baseline, test_images, test_labels), 4)
        row["baseline_seconds"] = round(time.perf_counter() - started, 1)
        torch.manual_seed(0)
        model = build_model(config(weight))
        started = time.perf_counter()
        losses = train_m2(model, images, labels, kept, steps, seed=0)
        row["m2_accuracy"] = round(accuracy(model, test_images, test_labels), 4)
        row["m2_seconds"] = round(time.perf_counter() - started, 1)
        row["m2_loss_first_last"] = [round(float(np.mean(losses[:20])), 2), round(float(np.mean(losses[-20:])), 2)]
        result["runs"].append(row)
        print(f"{count} labels: M2 {row['m2_accuracy']:.4f} ({row['m2_seconds']} s), classifier alone "
              f"{row['baseline_accuracy']:.4f}; paper M2 {PAPER[count]}", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = c.write_result(result["workload"], result, out)
    print(f"{result['workload']}: {result['seconds']} s -> {path}")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 training images, 60 steps (smoke test)")
    parser.add_argument("--out", type=Path, default=c.RESULTS, help="folder for the result JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the unlabelled images")
    parser.add_argument("--alpha", default="auto", help="m2's alpha: a number, or auto (0.1 * N / labels)")
    args = parser.parse_args()
    main(args.quick, args.out, args.threads, args.epochs, args.alpha)
