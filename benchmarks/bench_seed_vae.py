"""seed-vae: the plain MNIST VAE 784-400-200-20 (batch 128) and the stacked autoencoder
784-128-64-32-16 (model "stacked_ae", when omnivae.models.stacked exists), each timed through
the library (Lightning and a plain loop) and as a bare hand-written PyTorch loop in this file,
alternating in the same run, so the library's overhead is a ratio (target: <= 1.05)."""
from __future__ import annotations

import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)
import torch
import torch.nn.functional as F
from torch import nn

from omnivae.data.tensors import TensorData

NAME, LR = "seed-vae", 1e-3


def mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class BareVAE(nn.Module):
    """Kingma & Welling's VAE as anyone would write it: Bernoulli pixels, N(0, I) prior."""

    def __init__(self, sizes: list[int], latent: int):
        super().__init__()
        self.enc, self.dec = mlp([*sizes, 2 * latent]), mlp([latent, *reversed(sizes)])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (rec + kl) / len(x)


class BareAE(nn.Module):
    """A deterministic autoencoder trained end to end with binary cross-entropy."""

    def __init__(self, sizes: list[int], latent: int):
        super().__init__()
        self.enc, self.dec = mlp([*sizes, latent]), mlp([latent, *reversed(sizes)])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.dec(self.enc(x)), x, reduction="sum") / len(x)


IMAGE = {"kind": "image", "shape": [1, 28, 28], "arch": "mlp", "likelihood": "bernoulli"}

# label: (library config, bare network, its hidden widths and code size, batch size).
# stacked_ae runs with pretrain_epochs 0: its end-to-end stage is the one a bare loop matches.
WORKLOADS = {
    "vae": ({"model": "vae", "latent_dim": 20, "modalities": {"image": {**IMAGE, "hidden": [400, 200]}}},
            BareVAE, [400, 200], 20, 128),
    "stacked_ae": ({"model": "stacked_ae", "layers": [128, 64, 32, 16], "pretrain_epochs": 0,
                    "modalities": {"image": dict(IMAGE)}}, BareAE, [128, 64, 32], 16, 128),
}


def bare_path(net_class, hidden, latent, batch_size):
    """make(model, data) -> a BareLoop over the whole data set as one float tensor."""
    def make(model, data: TensorData):
        X = data.data["image"].float().div(255).flatten(1)
        return c.BareLoop(net_class([X.shape[1], *hidden], latent), X, batch_size, LR)
    return make


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None) -> Path:
    t0 = time.perf_counter()
    c.setup(threads)
    plan = c.Plan(quick, windows=3, rounds=9)  # many short rounds: paths are compared round by round
    result = c.new_result(NAME, quick, lr=LR, warmup=plan.warmup, window=plan.window,
                          windows=plan.windows, rounds=plan.rounds)
    train = c.load_mnist_or_none("train", limit=1024 if quick else None, with_label=False)
    if train is None:
        result["skipped"].append({"model": "all", "reason": f"MNIST files not found in {c.mnist_dir()}"})
        return c.finish(result, t0, out)
    test = c.load_mnist_or_none("test", limit=128 if quick else 1000, with_label=False)
    for label, (config, net, hidden, latent, batch) in WORKLOADS.items():
        got = c.run_model(result, label, config, train, batch, plan,
                          lambda m: TensorData.from_raw(m, test).batch(), [("image", "image")],
                          extra_paths={"bare": bare_path(net, hidden, latent, batch)}, lr=LR, options=label == "vae")
        if not got:
            continue
        run = got[2]
        rounds = run["round_step_ms"]
        run["vs_bare"] = {p: c.paired_ratio(rounds[p], rounds["bare"]) for p in ("lightning", "plain")}
        result["targets"].append(c.target(f"{label}: library (Lightning) step / bare step", run["vs_bare"]["lightning"], 1.05))
        result["targets"].append(c.target(f"{label}: library plain-loop step / bare step", run["vs_bare"]["plain"], 1.05,
                                          note="informational: the model without Lightning"))
    return c.finish(result, t0, out)


if __name__ == "__main__":
    args = c.parse_args(__doc__)
    main(args.quick, args.out, args.threads)
