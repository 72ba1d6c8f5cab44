"""PolyMNIST-style data: M image modalities per example, each a different MNIST image of the
same digit drawn over a background texture that belongs to that modality."""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from omnivae.data.mnist import DIGITS, load_mnist
from omnivae.data.raw import RawData
from omnivae.errors import InputError

TEXTURES = ("stripes", "checkerboard", "gradient", "blotches", "rings")  # modality m uses m % 5
_CHUNK = 8192


def make_polymnist(mnist: RawData, n_modalities: int = 5, seed: int = 0, n: int | None = None) -> RawData:
    """Examples "m0".."m{M-1}" (uint8 [N,3,28,28]) built from `mnist`, fully determined by `seed`.

    Within an example all modalities show the same digit class; they use distinct MNIST images
    whenever the class has at least M of them. info["source_index"] [N,M] records which.
    """
    images, digits = _mnist_arrays(mnist)
    if not isinstance(n_modalities, (int, np.integer)) or n_modalities < 1:
        raise InputError(f"n_modalities must be a positive integer, got {n_modalities!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise InputError(f"n must be a positive integer or None, got {n!r}")
    source = source_indices(digits, n_modalities, seed, n)
    mods = {}
    for m in range(n_modalities):
        texture, ink = modality_style(m, seed, size=2 * images.shape[-1])
        mods[f"m{m}"] = _render(images, source[:, m], texture, ink, np.random.default_rng([seed, 2, m]))
    info = {"source": "polymnist", "n_modalities": n_modalities, "seed": seed,
            "source_index": source, "classes": {"digit": list(DIGITS)},
            "textures": [TEXTURES[m % len(TEXTURES)] for m in range(n_modalities)]}
    from omnivae.modalities import ImageModality

    return RawData(mods, {k: ImageModality.kind for k in mods}, targets={"digit": digits[source[:, 0]]}, info=info)


def load_polymnist(root: str | Path | None = None, split: str = "train", n_modalities: int = 5,
                   seed: int = 0, limit: int | None = None, download: bool = False) -> RawData:
    """make_polymnist over load_mnist(root, split, limit=limit)."""
    mnist = load_mnist(root, split, with_label=False, limit=limit, download=download)
    return make_polymnist(mnist, n_modalities, seed)


def source_indices(digits: np.ndarray, n_modalities: int, seed: int, n: int | None = None) -> np.ndarray:
    """MNIST index [N,M] for each example and modality; every row holds one class.

    With n=None example i has the class of MNIST example i (so class balance is MNIST's).
    Within a class, modality m takes a random permutation of that class shifted by its own
    offset; distinct offsets give distinct images per row.
    """
    rng = np.random.default_rng([seed, 0])
    total = len(digits)
    if n is None:
        anchors = np.arange(total)
    elif n <= total:
        anchors = np.sort(rng.permutation(total)[:n])
    else:
        anchors = rng.integers(total, size=n)
    classes = digits[anchors]
    out = np.empty((len(anchors), n_modalities), dtype=np.int64)
    for c in np.unique(classes):
        members = np.flatnonzero(digits == c)
        rows = np.flatnonzero(classes == c)
        k = len(members)
        order = members[rng.permutation(k)]
        offsets = rng.permutation(k)[:n_modalities] if k >= n_modalities else rng.integers(k, size=n_modalities)
        out[rows] = order[(np.arange(len(rows))[:, None] + offsets[None, :]) % k]
    return out


# each texture's pattern in [0, 1] [size, size] from pixel coordinates y, x and modality m's angle;
# blotches and rings draw from rng (in this order of calls, so the data stay as published here)
def _stripes(m, rng, x, y, angle):
    return 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / (5 + m % 4))


def _checkerboard(m, rng, x, y, angle):
    cell = 3 + m % 4
    return ((x // cell + y // cell) % 2).astype(np.float32)


def _gradient(m, rng, x, y, angle):
    p = x * np.cos(angle) + y * np.sin(angle)
    return (p - p.min()) / (p.max() - p.min())


def _blotches(m, rng, x, y, angle):
    size = x.shape[0]
    return np.kron(rng.random((size // 7 + 1, size // 7 + 1)), np.ones((7, 7)))[:size, :size]


def _rings(m, rng, x, y, angle):  # around a random centre
    cy, cx = rng.uniform(0, x.shape[0], size=2)
    return 0.5 + 0.5 * np.sin(np.hypot(x - cx, y - cy) / (1.2 + 0.3 * (m % 3)))


TEXTURE_PATTERNS = {"stripes": _stripes, "checkerboard": _checkerboard, "gradient": _gradient,
                    "blotches": _blotches, "rings": _rings}


def modality_style(m: int, seed: int = 0, size: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """Background texture (uint8 [3,size,size], dark to mid tones) and bright ink colour [3] of modality m."""
    rng = np.random.default_rng([seed, 1, m])
    hue = (m * 0.618034 + rng.uniform(0, 0.05)) % 1.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.pi * ((m * 0.37) % 1.0)
    p = TEXTURE_PATTERNS[TEXTURES[m % len(TEXTURES)]](m, rng, x, y, angle)
    p = np.clip(p + rng.normal(0, 0.08, size=p.shape), 0, 1)
    light = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.6), dtype=np.float32)
    dark = np.array(colorsys.hsv_to_rgb((hue + 0.08) % 1.0, 0.7, 0.15), dtype=np.float32)
    texture = dark[:, None, None] + p[None] * (light - dark)[:, None, None]
    ink = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.35, 1.0))
    return np.round(texture * 255).astype(np.uint8), np.round(ink * 255).astype(np.uint8)


def _render(images: np.ndarray, index: np.ndarray, texture: np.ndarray, ink: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Digits images[index] in `ink` over random 28x28 crops of `texture`."""
    n, side = len(index), images.shape[-1]
    out = np.empty((n, 3, side, side), dtype=np.uint8)
    corners = rng.integers(0, texture.shape[-1] - side + 1, size=(n, 2))
    steps = np.arange(side)
    ink16 = ink.astype(np.uint16)[None, :, None, None]
    for start in range(0, n, _CHUNK):
        part = slice(start, min(n, start + _CHUNK))
        rows = (corners[part, 0, None] + steps)[:, :, None]
        cols = (corners[part, 1, None] + steps)[:, None, :]
        background = texture[:, rows, cols].transpose(1, 0, 2, 3).astype(np.uint16)
        alpha = images[index[part]].astype(np.uint16)
        out[part] = (background * (255 - alpha) + ink16 * alpha + 127) // 255
    return out


def _mnist_arrays(mnist: RawData) -> tuple[np.ndarray, np.ndarray]:
    """Grey images uint8 [N,1,28,28] and digits int64 [N] from an MNIST RawData, checked."""
    if not isinstance(mnist, RawData) or "image" not in mnist.modalities:
        raise InputError("make_polymnist needs a RawData with an 'image' modality (from load_mnist)")
    images = np.asarray(mnist.modalities["image"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise InputError(f"modality 'image': expected uint8 [N,1,H,W], got {images.dtype} {images.shape}")
    if "digit" in mnist.targets:
        digits = mnist.targets["digit"]
    elif "label" in mnist.modalities:
        digits = mnist.modalities["label"]
    else:
        raise InputError("make_polymnist needs digit classes: targets['digit'] or a 'label' modality")
    return images, np.asarray(digits, dtype=np.int64)
