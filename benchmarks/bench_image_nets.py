"""image-nets: the image networks against each other on 64x64 "hard" shapes (four shapes, six
colours, two sizes, four positions, noisy background). A single-modality VAE (latent 16,
Bernoulli pixels, Adam 1e-3, batch 64) is trained with arch "conv" and with arch "resnet" for
the same wall-clock budget each (150 s; --quick: 20 s), in a plain loop over the library's
model (batch_loader, model.loss(batch), Adam; no Lightning). The two archs train in
alternating time slices, so a change in the load of the shared machine hits both alike.

Reported per arch: steps done, examples/s, test reconstruction MSE (pixels in [0, 1]), test
loss (negative ELBO per image), and the shape accuracy of the test reconstructions as scored
by a small CNN classifier (omnivae.metrics.classifier; inputs average-pooled to 32x32) trained
on the real training images; its accuracy on the real test images is the ceiling. A grid of test originals and
both archs' reconstructions goes to docs/image_nets.png.

    python benchmarks/bench_image_nets.py [--quick] [--budget S] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)
import torch
import torch.nn.functional as F

from omnivae.data.shapes import make_shapes
from omnivae.data.tensors import TensorData, batch_loader
from omnivae.metrics.classifier import predict, train_classifier
from omnivae.models import build_model
from omnivae.report.figures import image_grid

NAME, LR, BATCH, LATENT = "image-nets", 1e-3, 64, 16
# Per arch: the image spec options besides shape. Widths are kept modest: a resnet step at
# batch 64 on 64x64 stays well under 0.5 s on the project's 2-core machine.
ARCHS = {
    "conv": {"arch": "conv", "channels": [32, 64, 128]},
    "resnet": {"arch": "resnet", "channels": [16, 32, 64], "blocks": 1},
}
PNG = c.REPO / "docs" / "image_nets.png"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 s per arch, less data (smoke test)")
    parser.add_argument("--out", type=Path, default=c.RESULTS, help="folder for the result JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--budget", type=float, default=None, help="training seconds per arch (default 150; quick 20)")
    parser.add_argument("--image-size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--png", type=Path, default=PNG, help="where the reconstruction grid goes")
    return parser.parse_args()


def model_config(arch: str, size: int) -> dict:
    image = {"kind": "image", "shape": [3, size, size], "likelihood": "bernoulli", **ARCHS[arch]}
    return {"model": "vae", "latent_dim": LATENT, "modalities": {"image": image}}


class Trainer:
    """A plain training loop that can be stopped and resumed (time slices): batch_loader,
    model.loss(batch), Adam. Counts steps, wall and CPU seconds spent inside the loop."""

    def __init__(self, model, data: TensorData, seed: int = 0):
        self.model, self.data, self.seed = model, data, seed
        self.opt = torch.optim.Adam(model.parameters(), lr=LR)
        self.epoch, self.batches = 0, iter(())
        self.steps, self.wall, self.cpu = 0, 0.0, 0.0
        self.losses: list[float] = []
        self.step_times: list[float] = []

    def next_batch(self):
        for batch in self.batches:
            return batch
        self.epoch += 1
        self.batches = iter(batch_loader(self.data, BATCH, shuffle=True, seed=self.seed + self.epoch, drop_last=True))
        return next(self.batches)

    def run(self, seconds: float) -> None:
        """Train for `seconds` of wall time (the step that crosses the limit completes)."""
        self.model.train()
        start, cpu0 = time.perf_counter(), time.process_time()
        last = start
        while last - start < seconds:
            batch = self.next_batch()
            self.opt.zero_grad(set_to_none=True)
            loss = self.model.loss(batch).total
            loss.backward()
            self.opt.step()
            self.losses.append(float(loss.detach()))
            now = time.perf_counter()
            self.step_times.append(now - last)
            self.steps, last = self.steps + 1, now
        self.wall += last - start
        self.cpu += time.process_time() - cpu0


@torch.no_grad()
def evaluate(model, test: TensorData, images: torch.Tensor, labels: torch.Tensor, clf) -> tuple[dict, torch.Tensor]:
    """Test loss, reconstruction MSE and the classifier's shape accuracy on the reconstructions."""
    model.eval()
    recon, losses = [], []
    for i in range(0, len(test), 256):
        batch = test.batch(torch.arange(i, min(i + 256, len(test))))
        torch.manual_seed(0)  # the loss draws z: the same draw for every arch
        losses.append(float(model.loss(batch).total) * len(batch))
        recon.append(model.reconstruct(batch, raw=True)["image"])  # posterior mean -> mean pixels
    recon = torch.cat(recon)
    shape_pred = predict(clf, classifier_input(recon))
    return {"test_loss": round(sum(losses) / len(test), 2),
            "test_mse": round(float(F.mse_loss(recon, images)), 5),
            "shape_accuracy": round(float((shape_pred == labels).float().mean()), 4)}, recon


def classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], average-pooled to about 32x32: the classifier trains 4x faster on
    64x64 images and still tells the four shapes apart (see its ceiling)."""
    k = max(1, min(images.shape[-2:]) // 32)
    return F.avg_pool2d(images.float(), k) if k > 1 else images.float()


def main() -> Path:
    args = parse_args()
    t0 = time.perf_counter()
    c.setup(args.threads)
    budget = args.budget or (20.0 if args.quick else 150.0)
    slice_s = min(10.0, budget / 2)  # alternating slices: machine load drift hits both archs alike
    n_train, n_test = (2000, 256) if args.quick else (8000, 1000)
    clf_train, clf_epochs = (2000, 2) if args.quick else (n_train, 3)
    size = args.image_size
    result = c.new_result(NAME, args.quick, level="hard", image_size=size, n_train=n_train, n_test=n_test,
                          latent_dim=LATENT, batch_size=BATCH, lr=LR, budget_s_per_arch=budget, slice_s=slice_s,
                          loop="plain loop: batch_loader, model.loss(batch), Adam (no Lightning)",
                          classifier={"train_images": clf_train, "epochs": clf_epochs})

    raw = make_shapes(n_train + n_test, level="hard", image_size=size, seed=0)
    train_raw, test_raw = raw.subset(slice(0, n_train)), raw.subset(slice(n_train, None))
    real_train = torch.from_numpy(train_raw.modalities["image"][:clf_train]).float().div(255)
    real_test = torch.from_numpy(test_raw.modalities["image"]).float().div(255)
    shape_train = torch.from_numpy(train_raw.targets["shape"][:clf_train]).long()
    shape_test = torch.from_numpy(test_raw.targets["shape"]).long()
    n_shapes = len(raw.info["classes"]["shape"])

    tc = time.perf_counter()
    clf = train_classifier(classifier_input(real_train), shape_train, "conv", n_shapes, epochs=clf_epochs, seed=0)
    ceiling = round(float((predict(clf, classifier_input(real_test)) == shape_test).float().mean()), 4)
    result["classifier"] = {"real_test_shape_accuracy": ceiling, "chance": round(1 / n_shapes, 4),
                            "seconds": round(time.perf_counter() - tc, 1)}
    print(f"  classifier: real test shape accuracy {ceiling:.3f} (chance {1 / n_shapes:.2f}), "
          f"{result['classifier']['seconds']} s")

    trainers, tests = {}, {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = build_model(model_config(arch, size), train_raw)
        trainers[arch] = Trainer(model, TensorData.from_raw(model, train_raw))
        tests[arch] = TensorData.from_raw(model, test_raw)
    while any(t.wall < budget for t in trainers.values()):
        for arch, t in trainers.items():
            if t.wall < budget:
                t.run(min(slice_s, budget - t.wall))

    recons = {}
    for arch, t in trainers.items():
        scores, recons[arch] = evaluate(t.model, tests[arch], real_test, shape_test, clf)
        tail = t.losses[-max(1, min(50, len(t.losses) // 5)):]
        run = {"model": arch, "config": t.model.config.to_dict(),
               "parameters": sum(p.numel() for p in t.model.parameters()),
               "steps": t.steps, "train_seconds": round(t.wall, 1), "cpu_seconds": round(t.cpu, 1),
               # CPU seconds per wall second: well below the thread count means other processes took cores
               "cpu_per_wall": round(t.cpu / t.wall, 2),
               "examples_per_s": round(t.steps * BATCH / t.wall, 1),
               "step_ms_median": round(1000 * statistics.median(t.step_times), 1),
               "epochs": round(t.steps * BATCH / n_train, 2),
               "train_loss_last": round(statistics.mean(tail), 2), **scores,
               "shape_accuracy_of_ceiling": round(scores["shape_accuracy"] / max(ceiling, 1e-9), 3)}
        result["runs"].append(run)
        print(f"  {arch}: {run['steps']} steps in {run['train_seconds']} s ({run['examples_per_s']} ex/s, "
              f"{run['step_ms_median']} ms/step), test MSE {run['test_mse']}, test loss {run['test_loss']}, "
              f"shape accuracy {run['shape_accuracy']:.3f} (ceiling {ceiling:.3f})")

    conv, res = result["runs"][0], result["runs"][1]
    result["targets"].append(c.target("resnet shape accuracy of reconstructions >= conv's (same wall clock)",
                                      res["shape_accuracy"], conv["shape_accuracy"], ">="))
    result["targets"].append(c.target("resnet test MSE <= conv's (same wall clock)", res["test_mse"],
                                      conv["test_mse"], "<="))
    result["targets"].append(c.target("resnet step at batch 64 (ms, median)", res["step_ms_median"], 500.0, "<="))

    k = 12
    rows = torch.stack([real_test[:k], recons["conv"][:k], recons["resnet"][:k]])
    png = image_grid(rows, args.png, row_labels=["original", f"conv (MSE {conv['test_mse']:.4f})",
                                                 f"resnet (MSE {res['test_mse']:.4f})"],
                     title=f"hard shapes {size}x{size}, VAE latent {LATENT}, {budget:.0f} s of training each")
    result["png"] = str(png.relative_to(c.REPO)) if png.is_relative_to(c.REPO) else str(png)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = c.write_result(NAME if size == 64 else f"{NAME}-{size}", result, args.out)
    print(f"{NAME}: {result['seconds']} s -> {path}, {png}")
    return path


if __name__ == "__main__":
    main()
