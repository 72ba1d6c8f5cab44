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
from typing import ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from omnivae.atomic import replacing
from omnivae.errors import InputError

# 2: image scorers train on degraded copies; 3: kinds named conv/mlp; 4: one net, a head per attribute;
# 5: batches of 64 at lr 2e-3 (the shared trunk learns the slow attribute, such as a shape, in as few epochs)
CACHE_FORMAT = 5


class Classifier(nn.Module):
    """A trunk shared by every attribute (`embed`: inputs -> features [N, F]) and one linear head
    per attribute; `forward` gives {attribute: logits}. Subclasses build the trunk for their inputs
    and say which inputs they take (`check`) and what their constructor needs from them (`args_for`)."""

    augmentable: ClassVar[bool] = False  # trains on `degrade`d copies when asked (images)

    def __init__(self, trunk: nn.Module, width: int, classes: dict[str, int]):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in classes.values())
        self.names = list(classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(x)
        return {name: head(h) for name, head in zip(self.names, self.heads)}

    @classmethod
    def args_for(cls, x: torch.Tensor, vocab_size: int | None) -> dict:
        return {}

    @classmethod
    def check(cls, x: torch.Tensor, spec: dict) -> None:
        """Float inputs with finite values; subclasses add their shape."""
        if not x.is_floating_point():
            raise InputError(f"x: expected a float tensor for kind {spec['kind']!r}, received {x.dtype}")
        if not torch.isfinite(x).all():
            raise InputError("x: expected finite values, received NaN or inf")


class ImageClassifier(Classifier):
    """Three conv blocks and adaptive pooling to 4x4 (so any H, W >= 16 works), then 128 features."""

    augmentable = True

    def __init__(self, in_channels: int, classes: dict[str, int], width: int = 32):
        trunk = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(32 * width, 128), nn.ReLU())
        super().__init__(trunk, 128, classes)

    @classmethod
    def args_for(cls, x, vocab_size):
        return {"in_channels": x.shape[1]}

    @classmethod
    def check(cls, x, spec):
        super().check(x, spec)
        if x.ndim != 4 or min(x.shape[2:]) < 16:
            raise InputError(f"x: expected images [N, C, H, W] with H, W >= 16, received {tuple(x.shape)}")


class VectorClassifier(Classifier):
    """Two hidden layers over [N, D] vectors."""

    def __init__(self, in_dim: int, classes: dict[str, int], hidden: int = 128):
        trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        super().__init__(trunk, hidden, classes)

    @classmethod
    def args_for(cls, x, vocab_size):
        return {"in_dim": x.shape[1]}

    @classmethod
    def check(cls, x, spec):
        super().check(x, spec)
        if x.ndim != 2:
            raise InputError(f"x: expected vectors [N, D], received {tuple(x.shape)}")


class TokenClassifier(Classifier):
    """Mean of token embeddings (pad id 0 ignored), then one hidden layer."""

    def __init__(self, vocab_size: int, classes: dict[str, int], dim: int = 64):
        trunk = nn.Sequential(nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0), nn.Linear(dim, dim),
                              nn.ReLU())
        super().__init__(trunk, dim, classes)

    @classmethod
    def args_for(cls, x, vocab_size):
        if vocab_size is None or vocab_size < 2:
            raise InputError(f"vocab_size: expected an int >= 2 for kind 'tokens', received {vocab_size!r}")
        return {"vocab_size": vocab_size}

    @classmethod
    def check(cls, x, spec):
        if x.ndim != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise InputError(f"x: expected integer token ids [N, L], received {tuple(x.shape)} {x.dtype}")
        vocab = spec.get("vocab_size")
        if vocab is not None and (x.min() < 0 or x.max() >= vocab):
            raise InputError(f"x: expected token ids in [0, {vocab}), received [{int(x.min())}, {int(x.max())}]")


# images [N,C,H,W], feature vectors [N,D], token ids [N,L]
CLASSIFIERS: dict[str, type[Classifier]] = {"conv": ImageClassifier, "mlp": VectorClassifier,
                                            "tokens": TokenClassifier}
SINGLE = "class"  # the head of a classifier trained on one label tensor


def classifier_class(kind: str) -> type[Classifier]:
    if kind not in CLASSIFIERS:
        raise InputError(f"kind: expected one of {tuple(CLASSIFIERS)}, received {kind!r}")
    return CLASSIFIERS[kind]


def build_classifier(kind: str, classes: dict[str, int], single: bool = False, **args) -> Classifier:
    """Rebuild an untrained classifier from its JSON-able spec; `clf.spec` records it."""
    clf = classifier_class(kind)(classes=classes, **args)
    clf.spec = {"kind": kind, "classes": dict(classes), "single": single, **args}
    return clf


def _check_inputs(x, spec: dict) -> None:
    """Validate x for a classifier spec; raises InputError naming shape and dtype."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x: expected a torch.Tensor, received {type(x).__name__}")
    if x.shape[:1] == (0,):
        raise InputError(f"x: expected a non-empty batch, received shape {tuple(x.shape)}")
    CLASSIFIERS[spec["kind"]].check(x, spec)


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
    x: torch.Tensor, y, kind: str, num_classes=None, epochs: int = 10,
    seed: int = 0, batch_size: int = 64, vocab_size: int | None = None, lr: float = 2e-3,
    augment: bool = False,
) -> Classifier:
    """Fit a small classifier with Adam on CPU; returns it in eval mode.

    y: integer labels [N] (with num_classes an int), or {attribute: labels [N]} with -1 where an
    attribute is unknown (num_classes a dict, or None to count them): one network, a head per
    attribute, each head's loss over the examples that know its attribute. Images are meant to
    be floats in [0, 1]; other ranges are accepted (e.g. generated samples). augment=True
    (images only) trains on `degrade`d copies of half of each batch.

    The defaults (batches of 64, lr 2e-3) let a shared trunk learn its slowest attribute in a few
    epochs: on the shapes "partial" level (7,200 images, 4 epochs) the shape head reaches 0.973 on
    held-out images where batches of 128 at lr 1e-3 left it at 0.581 (colour, size and position at
    1.0 either way); MNIST digits 0.975 against 0.935.
    """
    cls = classifier_class(kind)
    args = cls.args_for(x, vocab_size)
    _check_inputs(x, {"kind": kind, **args})
    single = not isinstance(y, dict)
    labels, classes = _labels(x, {SINGLE: y} if single else y,
                              {SINGLE: num_classes} if single else num_classes, missing_ok=not single)
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs, batch_size: expected positive ints, received {epochs!r}, {batch_size!r}")
    if augment and not cls.augmentable:
        raise InputError(f"augment: only image (conv) classifiers are augmented, received kind {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        clf = build_classifier(kind, classes, single, **args)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        clf.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0])
            for start in range(0, x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                xb = degrade(x[idx], gen) if augment else x[idx]
                logits = clf(_fast_layout(xb))
                loss = sum(F.cross_entropy(logits[t], labels[t][idx], ignore_index=-1, reduction="sum")
                           / (labels[t][idx] >= 0).sum().clamp_min(1) for t in classes)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return clf.eval()


def _labels(x: torch.Tensor, y: dict, num_classes: dict | None, missing_ok: bool
            ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Checked label tensors and class counts per attribute."""
    if not y:
        raise InputError("y: expected at least one attribute")
    labels, classes = {}, {}
    for name, v in y.items():
        if not isinstance(v, torch.Tensor) or v.shape != (x.shape[0],) or v.is_floating_point():
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InputError(f"y: expected integer labels [{x.shape[0]}], received {shape}")
        v = v.long()
        n = (num_classes or {}).get(name)
        if n is None:
            n = int(v.max()) + 1
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise InputError(f"num_classes: expected an int >= 2, received {n!r}")
        low = -1 if missing_ok else 0
        if v.min() < low or v.max() >= n:
            raise InputError(f"y: expected labels in [{low}, {n}), received [{int(v.min())}, {int(v.max())}]")
        labels[name], classes[name] = v, n
    return labels, classes


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    """Images [B, C, H, W] in channels-last order, where these small convolutions run 2-4x faster
    on CPU than in the default order (same results up to float rounding); other inputs as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _batches(clf: Classifier, x: torch.Tensor, batch_size: int):
    """x [N, ...] in batches of at most batch_size, checked, in the layout the classifier runs fastest."""
    spec = getattr(clf, "spec", None)
    if spec is None:
        raise InputError("clf: expected a classifier from train_classifier/build_classifier")
    _check_inputs(x, spec)
    expected = spec.get("in_channels", spec.get("in_dim"))
    if expected is not None and x.shape[1] != expected:
        raise InputError(f"x: expected size {expected} in dim 1, received shape {tuple(x.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected a positive int, received {batch_size!r}")
    clf.eval()
    return (_fast_layout(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size))


# Small batches keep a conv layer's activations in cache: 32x32 images in channels-last batches of 64
# take about a quarter of the time per image of batches of 1,000 in the default layout (one thread).
PREDICT_BATCH = 64


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = PREDICT_BATCH):
    """Predicted class ids in batches, with the classifier in eval mode: LongTensor [N] for a
    classifier trained on one label tensor, else {attribute: LongTensor [N]}."""
    parts = [clf(xb) for xb in _batches(clf, x, batch_size)]
    out = {t: torch.cat([p[t].argmax(dim=1) for p in parts]).long() for t in clf.names}
    return out[SINGLE] if clf.spec.get("single") else out


@torch.no_grad()
def features(clf: Classifier, x: torch.Tensor, batch_size: int = PREDICT_BATCH) -> torch.Tensor:
    """The shared trunk's outputs [N, F] (the features before the attribute heads), in batches."""
    return torch.cat([clf.embed(xb) for xb in _batches(clf, x, batch_size)])


def training_key(x: torch.Tensor, y: dict[str, torch.Tensor], **settings) -> str:
    """A file-name-safe key for a classifier trained on x and y with `settings`: the SHA-256 of
    them all (and of CACHE_FORMAT), so any change of data, labels or settings trains anew."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **settings}, sort_keys=True).encode())
    for t in [x, *(y[k] for k in sorted(y))]:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(sorted(y)).encode())
    return f"{settings.get('kind', 'clf')}-{digest.hexdigest()[:24]}"


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    with replacing(path) as tmp:
        write(str(tmp))


def _load_cached(weights: Path, meta: Path) -> nn.Module:
    info = json.loads(meta.read_text())
    if info.get("format") != CACHE_FORMAT:
        raise ValueError(f"unsupported cache format {info.get('format')!r}")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
        raise ValueError("weights checksum does not match")
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: draw nothing from the caller's RNG
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
