"""Built-in synthetic data: coloured shapes on black, each paired with a caption.

Three difficulty levels (see LEVELS and docs/data.md) vary more attributes as they go; a
fourth, "partial", draws like "hard" but its captions say less than the image (never the
position, the size only in about half of them). Everything is drawn with numpy
coordinate grids, so 10,000 images take a fraction of a second.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from string import Formatter

import numpy as np

from omnivae.data.raw import RawData
from omnivae.errors import InputError

ATTRIBUTES = ("shape", "color", "size", "position")

# Clean RGB values; every level uses a prefix of this table.
RGB = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "yellow": (255, 255, 0), "magenta": (255, 0, 255), "cyan": (0, 255, 255),
}

# Centre (x, y) of each position as a fraction of the image, y pointing down.
CENTRES = {
    "centre": (0.5, 0.5), "top left": (0.28, 0.28), "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72), "bottom right": (0.72, 0.72),
}


@lru_cache(maxsize=None)
def _fields(template: str) -> frozenset[str]:
    """Attributes a caption template names: its {placeholders}."""
    return frozenset(name for _, name, _, _ in Formatter().parse(template) if name)


@dataclass(frozen=True)
class Level:
    """What one difficulty level varies and how its captions read."""

    shapes: tuple[str, ...]
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    radii: tuple[float, ...]        # shape radius per size, as a fraction of the image
    positions: tuple[str, ...]
    jitter: float                   # max random shift of the centre, fraction of the image
    noise: int                      # background noise amplitude (0 = plain black)
    templates: tuple[str, ...]
    # Attributes only some captions name: each is named with probability `optional_rate`
    # (drawn per example), then a template naming exactly that choice is picked.
    optional: tuple[str, ...] = ()
    optional_rate: float = 0.5

    def __post_init__(self) -> None:
        optional = set(self.optional)
        for k in range(len(optional) + 1):
            for chosen in combinations(self.optional, k):
                if not any(_fields(t) & optional == set(chosen) for t in self.templates):
                    raise ValueError(f"no template names exactly {set(chosen) or 'none'} of {optional}")

    def classes(self) -> dict[str, list[str]]:
        return {"shape": list(self.shapes), "color": list(self.colors),
                "size": list(self.sizes), "position": list(self.positions)}

    def varied(self) -> list[str]:
        return [a for a, names in self.classes().items() if len(names) > 1]


LEVELS = {
    # 3 shapes x 4 colours, always big and centred; one caption template.
    "easy": Level(
        shapes=("circle", "square", "triangle"),
        colors=("red", "green", "blue", "yellow"),
        sizes=("big",), radii=(0.32,), positions=("centre",), jitter=0.0, noise=0,
        templates=("a {color} {shape}",),
    ),
    # 4 shapes x 6 colours x 2 sizes, centred with a small jitter; three templates.
    "medium": Level(
        shapes=("circle", "square", "triangle", "diamond"),
        colors=("red", "green", "blue", "yellow", "magenta", "cyan"),
        sizes=("small", "big"), radii=(0.18, 0.32), positions=("centre",), jitter=0.05, noise=0,
        templates=("a {size} {color} {shape}", "a {color} {shape}, {size}",
                   "one {size} {shape} in {color}"),
    ),
    # Medium plus four quadrant positions (so shapes are smaller) and background noise.
    "hard": Level(
        shapes=("circle", "square", "triangle", "diamond"),
        colors=("red", "green", "blue", "yellow", "magenta", "cyan"),
        sizes=("small", "big"), radii=(0.12, 0.2),
        positions=("top left", "top right", "bottom left", "bottom right"),
        jitter=0.03, noise=40,
        templates=("a {size} {color} {shape} at the {position}",
                   "a {color} {shape}, {size}, in the {position}",
                   "in the {position}, one {size} {shape} in {color}"),
    ),
    # Hard's drawing (same images and targets for the same seed), but captions that say less
    # than the image: never the position, the size in about half of them.
    "partial": Level(
        shapes=("circle", "square", "triangle", "diamond"),
        colors=("red", "green", "blue", "yellow", "magenta", "cyan"),
        sizes=("small", "big"), radii=(0.12, 0.2),
        positions=("top left", "top right", "bottom left", "bottom right"),
        jitter=0.03, noise=40,
        templates=("a {color} {shape}", "one {shape} in {color}",
                   "a {size} {color} {shape}", "a {color} {shape}, {size}",
                   "one {size} {shape} in {color}"),
        optional=("size",),
    ),
}

_CHUNK = 4096


def _level(level: str) -> Level:
    if not isinstance(level, str) or level not in LEVELS:
        raise InputError(f"unknown shapes level {level!r}; allowed: {sorted(LEVELS)}")
    return LEVELS[level]


def caption_for(attrs: dict[str, int], level: str, rng: np.random.Generator | None = None) -> str:
    """Caption of one example from its class indices; `rng` picks the template (else the first)."""
    spec = _level(level)
    names = spec.classes()
    words = {}
    for a in ATTRIBUTES:
        i = int(attrs.get(a, 0))
        if not 0 <= i < len(names[a]):
            raise InputError(f"{a} index {i} out of range for level {level!r} (0..{len(names[a]) - 1})")
        words[a] = names[a][i]
    return _template(spec, rng).format(**words)


def _template(spec: Level, rng: np.random.Generator | None) -> str:
    """The first template without `rng`; else a random one (after drawing which optional
    attributes to name, for levels that have any)."""
    if rng is None:
        return spec.templates[0]
    if not spec.optional:
        return spec.templates[int(rng.integers(len(spec.templates)))]
    chosen = {a for a in spec.optional if rng.random() < spec.optional_rate}
    pool = [t for t in spec.templates if _fields(t) & set(spec.optional) == chosen]
    return pool[int(rng.integers(len(pool)))]


def parse_caption(text: str, level: str | None = None) -> dict[str, int | None]:
    """Class index of each attribute named in `text` (None if absent or contradictory).

    Indices refer to the level's class lists; with level=None, to the "hard" lists.
    """
    names = _level(level or "hard").classes()
    tokens = re.findall(r"[a-z]+", str(text).lower())
    grams = set(tokens) | {" ".join(p) for p in zip(tokens, tokens[1:])}
    out: dict[str, int | None] = {}
    for a in ATTRIBUTES:
        found = [i for i, name in enumerate(names[a]) if name in grams]
        out[a] = found[0] if len(found) == 1 else None
    return out


def named_attributes(text: str, level: str | None = None) -> set[str]:
    """Attributes a caption names unambiguously (those parse_caption does not map to None)."""
    return {a for a, i in parse_caption(text, level).items() if i is not None}


def make_shapes(n: int = 10000, level: str = "easy", seed: int = 0, image_size: int = 32) -> RawData:
    """`n` random shapes with captions at the given difficulty level, fully determined by `seed`."""
    spec = _level(level)
    _check_int("n", n, 1)
    _check_int("image_size", image_size, 16)
    _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    counts = {a: len(v) for a, v in spec.classes().items()}
    targets = {a: rng.integers(counts[a], size=n).astype(np.int64) for a in ATTRIBUTES}
    shift = rng.uniform(-spec.jitter, spec.jitter, size=(n, 2))
    text_rng = np.random.default_rng([seed, 1])
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(n, start + _CHUNK))
        images[part] = _draw(spec, {a: t[part] for a, t in targets.items()}, shift[part],
                             image_size, np.random.default_rng([seed, 2, start]))
    names = spec.classes()
    captions, used = [], []
    for row in zip(*(targets[a].tolist() for a in ATTRIBUTES)):
        template = _template(spec, text_rng)
        captions.append(template.format(**{a: names[a][i] for a, i in zip(ATTRIBUTES, row)}))
        used.append(_fields(template))
    named = {a: np.array([a in u for u in used], dtype=bool) for a in ATTRIBUTES}
    info = {"source": "shapes", "level": level, "classes": names, "varied": spec.varied(), "named": named}
    from omnivae.modalities import ImageModality, TextModality

    kinds = {"image": ImageModality.kind, "text": TextModality.kind}
    return RawData({"image": images, "text": captions}, kinds,
                   targets=targets, info=info)


def _check_int(name: str, value, minimum: int) -> None:
    """Sizes and seeds are whole numbers (numpy's own errors for -1 or 2.5 name no argument)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _draw(spec: Level, t: dict[str, np.ndarray], shift: np.ndarray, size: int,
          rng: np.random.Generator) -> np.ndarray:
    """Images [k,3,S,S] for one chunk of attribute arrays."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    centres = np.array([CENTRES[p] for p in spec.positions], dtype=np.float32)[t["position"]]
    centres = centres + shift.astype(np.float32)
    radius = np.array(spec.radii, dtype=np.float32)[t["size"]][:, None, None]
    dx = grid[None, None, :] - centres[:, 0, None, None]
    dy = grid[None, :, None] - centres[:, 1, None, None]
    mask = np.zeros((len(radius), size, size), dtype=bool)
    for s, shape in enumerate(spec.shapes):
        k = np.flatnonzero(t["shape"] == s)
        if len(k):
            mask[k] = _inside(shape, dx[k], dy[k], radius[k])
    rgb = np.array([RGB[c] for c in spec.colors], dtype=np.uint8)[t["color"]][:, :, None, None]
    if spec.noise:
        background = rng.integers(0, spec.noise, size=(len(radius), 3, size, size), dtype=np.uint8)
    else:
        background = np.zeros((1, 1, 1, 1), dtype=np.uint8)
    return np.where(mask[:, None], rgb, background)


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Filled-shape masks of roughly equal area for a given radius r (y points down)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up at -r, flat base at +0.75 r
        return (dy <= 0.75 * r) & (np.abs(dx) <= 0.6 * (dy + r))
    raise InputError(f"unknown shape {shape!r}")
