"""Small evaluation classifiers (CNN, MLP, embedding bag) used to score coherence of generations.

Weights are cached as safetensors plus a JSON of constructor arguments; nothing is pickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from omnivae.atomic import replacing
from omnivae.errors import InputError

KINDS = ("conv", "mlp", "tokens")  # images [N,C,H,W], feature vectors [N,D], token ids [N,L]
CACHE_FORMAT = 3  # 2: image scorers train on degraded copies too; 3: kinds named conv/mlp


class ImageClassifier(nn.Module):
    """Three conv blocks and adaptive pooling to 4x4, so any H, W >= 16 works."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * width, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VectorClassifier(nn.Module):
    """Two-hidden-layer MLP over [N, D] vectors."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TokenClassifier(nn.Module):
    """Mean of token embeddings (pad id 0 ignored) followed by an MLP."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def build_classifier(kind: str, **args) -> nn.Module:
    """Rebuild an untrained classifier from its JSON-able spec; `clf.spec` records it."""
    classes = {"conv": ImageClassifier, "mlp": VectorClassifier, "tokens": TokenClassifier}
    if kind not in classes:
        raise InputError(f"kind: expected one of {KINDS}, received {kind!r}")
    clf = classes[kind](**args)
    clf.spec = {"kind": kind, **args}
    return clf


def _check_inputs(x, kind: str, vocab_size: int | None = None) -> None:
    """Validate x for a classifier kind; raises InputError naming shape and dtype."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x: expected a torch.Tensor, received {type(x).__name__}")
    if x.shape[:1] == (0,):
        raise InputError(f"x: expected a non-empty batch, received shape {tuple(x.shape)}")
    if kind == "tokens":
        if x.ndim != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise InputError(f"x: expected integer token ids [N, L], received {tuple(x.shape)} {x.dtype}")
        if vocab_size is not None and (x.min() < 0 or x.max() >= vocab_size):
            raise InputError(f"x: expected token ids in [0, {vocab_size}), received "
                             f"[{int(x.min())}, {int(x.max())}]")
        return
    if not x.is_floating_point():
        raise InputError(f"x: expected a float tensor for kind {kind!r}, received {x.dtype}")
    if not torch.isfinite(x).all():
        raise InputError("x: expected finite values, received NaN or inf")
    if kind == "conv" and (x.ndim != 4 or min(x.shape[2:]) < 16):
        raise InputError(f"x: expected images [N, C, H, W] with H, W >= 16, received {tuple(x.shape)}")
    if kind == "mlp" and x.ndim != 2:
        raise InputError(f"x: expected vectors [N, D], received {tuple(x.shape)}")


def degrade(x: torch.Tensor, generator: torch.Generator | None = None, max_sigma: float = 1.2,
            p: float = 0.5) -> torch.Tensor:
    """Images [N, C, H, W] where a random half is blurred (Gaussian, sigma uniform in 0..max_sigma
    pixels) and lightly noised. Scoring classifiers train on these so that they read an attribute
    (which shape, which digit) rather than how sharp the image is: one trained on sharp images
    only calls a third of real squares something else once they are blurred by one pixel, and
    would score a generator's sharpness twice (sharpness has its own figures)."""
    n, c = x.shape[:2]
    sigma = (torch.rand(n, generator=generator) * max_sigma).clamp_min(1e-3)
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-r[None] ** 2 / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [N*C, 5]
    y = x.reshape(1, n * c, *x.shape[2:])
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k[:, None, :, None], groups=n * c)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * 0.03 * torch.rand(n, 1, 1, 1, generator=generator)
    keep = (torch.rand(n, generator=generator) >= p)[:, None, None, None]
    return torch.where(keep, x, y.reshape_as(x) + noise)


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, kind: str, num_classes: int, epochs: int = 10,
    seed: int = 0, batch_size: int = 128, vocab_size: int | None = None, lr: float = 1e-3,
    augment: bool = False,
) -> nn.Module:
    """Fit a small classifier with Adam on CPU; returns it in eval mode.

    Images are meant to be floats in [0, 1]; other ranges are accepted (e.g. generated samples).
    augment=True (images only) trains on `degrade`d copies of half of each batch.
    """
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {KINDS}, received {kind!r}")
    if kind == "tokens" and (vocab_size is None or vocab_size < 2):
        raise InputError(f"vocab_size: expected an int >= 2 for kind 'tokens', received {vocab_size!r}")
    _check_inputs(x, kind, vocab_size)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes: expected an int >= 2, received {num_classes!r}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"y: expected integer labels [{x.shape[0]}], received {shape}")
    if y.min() < 0 or y.max() >= num_classes:
        raise InputError(
            f"y: expected labels in [0, {num_classes}), received [{int(y.min())}, {int(y.max())}]"
        )
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs, batch_size: expected positive ints, received {epochs!r}, {batch_size!r}")
    args = {"conv": {"in_channels": x.shape[1]}, "mlp": {"in_dim": x.shape[1]},
            "tokens": {"vocab_size": vocab_size}}[kind]
    if augment and kind != "conv":
        raise InputError(f"augment: only image (conv) classifiers are augmented, received kind {kind!r}")
    y = y.long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        clf = build_classifier(kind, num_classes=num_classes, **args)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        clf.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0])
            for start in range(0, x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                xb = degrade(x[idx], gen) if augment else x[idx]
                loss = F.cross_entropy(clf(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return clf.eval()


@torch.no_grad()
def predict(clf: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted class ids (LongTensor [N]) in batches, with the classifier in eval mode."""
    spec = getattr(clf, "spec", None)
    if spec is None:
        raise InputError("clf: expected a classifier from train_classifier/build_classifier")
    _check_inputs(x, spec["kind"], spec.get("vocab_size"))
    expected = spec.get("in_channels", spec.get("in_dim"))
    if expected is not None and x.shape[1] != expected:
        raise InputError(f"x: expected size {expected} in dim 1, received shape {tuple(x.shape)}")
    clf.eval()
    return torch.cat([clf(x[i : i + batch_size]).argmax(dim=1)
                      for i in range(0, x.shape[0], batch_size)]).long()


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    with replacing(path) as tmp:
        write(str(tmp))


def _load_cached(weights: Path, meta: Path) -> nn.Module:
    info = json.loads(meta.read_text())
    if info.get("format") != CACHE_FORMAT:
        raise ValueError(f"unsupported cache format {info.get('format')!r}")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
        raise ValueError("weights checksum does not match")
    clf = build_classifier(**info["spec"])
    clf.load_state_dict(load_file(str(weights)), strict=True)
    return clf.eval()


def cached_classifier(
    cache_dir: str | os.PathLike, key: str, builder: Callable[[], nn.Module]
) -> nn.Module:
    """Load classifier `key` from cache_dir, or call builder() and cache it; a bad cache is rebuilt."""
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", key):
        raise InputError(
            f"key: expected a file-name-safe string (letters, digits, _ . -), received {key!r}"
        )
    cache = Path(cache_dir)
    weights, meta = cache / f"{key}.safetensors", cache / f"{key}.json"
    if weights.exists() and meta.exists():
        try:
            return _load_cached(weights, meta)
        except Exception as exc:  # any unreadable or mismatched cache entry is rebuilt
            warnings.warn(f"classifier cache {meta} is unreadable ({exc}); rebuilding", stacklevel=2)
    clf = builder()
    if getattr(clf, "spec", None) is None:
        raise InputError("builder: expected it to return a classifier from train_classifier")
    cache.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    _atomic_write(weights, lambda tmp: save_file(state, tmp))
    info = {"format": CACHE_FORMAT, "key": key, "spec": clf.spec,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    _atomic_write(meta, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    return clf.eval()
