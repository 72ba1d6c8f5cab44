"""Cross-modal generation from user inputs given on the command line or from files."""
from __future__ import annotations

import json
import struct
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from omnivae.errors import InputError
from omnivae.io import load_model

MAX_SAMPLES = 10_000  # samples per input and call: more is almost surely a typo (1e9 images would need ~64 GB)


class UnknownWordsWarning(UserWarning):
    """A caption holds words the model's tokenizer never saw in training (they become <unk>,
    and the generation ignores them)."""


def check_sample_count(n, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= MAX_SAMPLES:
        raise InputError(f"{name} must be a whole number from 1 to {MAX_SAMPLES:,} samples per input, got {n!r} "
                         "(call again for more)")


def unknown_words(modality, captions) -> list[str]:
    """The words of `captions` that the text modality's tokenizer maps to <unk>, in order, once each."""
    from omnivae.modalities.text.tokenizer import SPECIALS, UNK

    tok = getattr(modality, "tokenizer", None)
    if tok is None:
        return []
    found: list[str] = []
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            continue
        enc = tok.encode(caption, add_special_tokens=False)
        for i, (start, end) in zip(enc.ids, enc.offsets):
            word = caption[start:end].strip(" \u2581")
            if i == UNK and word and word not in SPECIALS and word not in found:
                found.append(word)
    return found


def warn_unknown_words(model, source: str, values) -> list[str]:
    """Warn (UnknownWordsWarning) when text inputs hold words the model never saw."""
    mod = model.modalities[source]
    if mod.kind != "text":
        return []
    words = unknown_words(mod, values)
    if words:
        warnings.warn(f"unknown words in the {source!r} input, ignored by the model (not in its training "
                      f"vocabulary): {', '.join(repr(w) for w in words)}", UnknownWordsWarning, stacklevel=3)
    return words


def read_image(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file as uint8 [C,H,W] matching the model's shape (converted and resized)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if shape[0] == 3 else "L").resize((shape[2], shape[1]))
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError as exc:  # a tiny file that claims billions of pixels
        raise InputError(f"image file {path} is refused: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise InputError(f"image file {path} cannot be read as an image: {exc}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def parse_number(text: str, kind: type, source: str):
    """A command-line number for modality `source`, or an InputError that quotes it."""
    try:
        return kind(text)
    except ValueError:
        raise InputError(f"modality {source!r}: expected {'an integer' if kind is int else 'a number'}, "
                         f"got {text!r}") from None


def parse_inputs(model, source: str, values: list[str]):
    mod = model.modalities[source]
    if mod.kind == "text":
        return list(values)
    if mod.kind == "categorical":
        return [v if not v.lstrip("-").isdigit() else int(v) for v in values] if mod.spec.classes \
            else [parse_number(v, int, source) for v in values]
    if mod.kind == "image":
        return np.stack([np.load(v, allow_pickle=False) if v.endswith(".npy") else read_image(v, mod.spec.shape)
                         for v in values])
    if mod.kind == "vector":
        return np.stack([np.load(v, allow_pickle=False) if v.endswith(".npy") else
                         np.array([parse_number(x, float, source) for x in v.split(",")], dtype=np.float32)
                         for v in values])
    raise InputError(f"cannot read command-line inputs for modality {source!r} of kind {mod.kind}")


def generate_from_inputs(model_dir, source: str, values: list[str], targets, n: int, out: Path,
                         **options) -> dict[str, list[str]]:
    """Generate; images are written as PNG files under `out`, everything is listed in outputs.json.
    n (samples per input) is 1 to MAX_SAMPLES; caption words the model never saw raise an
    UnknownWordsWarning."""
    from omnivae.report.figures import image_grid

    check_sample_count(n)
    model = load_model(model_dir)
    model.check_names([source], "--from")
    targets = [t for t in model.names if t != source] if not targets else model.check_names(targets, "--to")
    inputs = parse_inputs(model, source, values)
    warn_unknown_words(model, source, inputs)
    result = model.generate({source: inputs}, given=[source], targets=targets, n=n, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    for name, value in result.items():
        kind = model.modalities[name].kind
        if kind == "image":
            imgs = value if n > 1 else value.unsqueeze(0)  # [n,B,C,H,W]
            paths = []
            for i in range(imgs.shape[1]):
                path = out / f"{name}_{i:03d}.png"
                image_grid(imgs[:, i], path, nrow=n)
                paths.append(str(path))
            written[name] = paths
        else:
            rows = value if n > 1 else [value]
            written[name] = [str(r.tolist() if isinstance(r, torch.Tensor) else r) for r in zip(*rows)]
    (out / "outputs.json").write_text(json.dumps({"inputs": values, "outputs": written}, indent=2))
    return written
