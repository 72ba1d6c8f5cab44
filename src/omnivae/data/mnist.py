"""MNIST: an IDX reader, a checked and resumable download, and a loader returning RawData.

Captions name the digit. The "partial" captions sometimes also name a property the image
shows (stroke thickness, slant), computed from the pixels, and otherwise leave it open.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from omnivae.atomic import promote
from omnivae.data.raw import RawData
from omnivae.errors import InputError, OmniVAEError

FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CAPTION_TEMPLATES = ("a handwritten {d}", "the digit {d}", "a {d} written by hand")

# Partial captions: pixel properties, their class names, and templates by what they name
# ({t}: thickness, {s}: slant); each property is named with probability NAMED_RATE.
PROPERTIES = {"thickness": ["thin", "thick"], "slant": ["slanted left", "upright", "slanted right"]}
SLANT_THRESHOLD = 0.15  # |horizontal shear| (columns per row) above which a digit is slanted
NAMED_RATE = 0.5
# A caption names a property only where it is plain to see (stroke_properties(plain=True)): at
# least this far from its class boundary. Without the margins 14% of the digits were within 5%
# of their median ink and 23% within 0.05 of a slant threshold, and a classifier trained on real
# images read the thickness right on only 93% of the test images, the slant on 95%.
THICKNESS_MARGIN = 0.1  # of the digit's median ink count
SLANT_MARGIN = 0.05     # columns per row
PARTIAL_TEMPLATES = {
    (): CAPTION_TEMPLATES,
    ("thickness",): ("a {t} {d}", "the digit {d} in a {t} stroke"),
    ("slant",): ("a handwritten {d}, {s}", "the digit {d}, {s}"),
    ("thickness", "slant"): ("a {t} {d}, {s}", "the digit {d} in a {t} stroke, {s}"),
}

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DownloadError(OmniVAEError, OSError):
    """No mirror delivered a file with the expected checksum."""


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Array stored in an IDX file (gzipped or not), after checking its header and length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read IDX file {path}: {exc} (truncated or corrupt gzip?)") from None
    if len(raw) < 4:
        raise InputError(f"IDX file {path}: expected a 4-byte header, found {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise InputError(f"IDX file {path}: expected magic number {expected_magic}, found {magic}")
    if raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise InputError(f"IDX file {path}: magic number {magic} (bytes {raw[:4].hex()}) is not a "
                         f"valid IDX header (00 00, type in {sorted(IDX_DTYPES)}, ndim >= 1)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise InputError(f"IDX file {path}: expected {head} header bytes for {ndim} dims, found {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - head != expected:
        raise InputError(f"IDX file {path}: header says shape {dims} ({expected} data bytes), "
                         f"found {len(raw) - head} data bytes (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def default_root() -> Path:
    """$OMNIVAE_DATA_DIR/mnist if that variable is set, else ~/.cache/omnivae/mnist."""
    base = os.environ.get("OMNIVAE_DATA_DIR")
    return Path(base) / "mnist" if base else Path.home() / ".cache" / "omnivae" / "mnist"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_mnist(root: str | Path | None = None, mirrors=MIRRORS, timeout: float = 30) -> Path:
    """Fetch the four MNIST files into `root` (skipping verified ones); returns the folder.

    Each file goes to `name.part` (resumed with an HTTP Range request when possible), is
    checked against its sha256, then renamed into place.
    """
    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    for name, sha in FILES.items():
        target = root / name
        if target.is_file() and sha256_of(target) == sha:
            continue
        part = root / (name + ".part")
        problems = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _fetch(url, part, timeout)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                problems.append(f"{url}: {exc}")
                continue
            got = sha256_of(part)
            if got == sha:
                promote(part, target)
                break
            part.unlink()
            problems.append(f"{url}: checksum mismatch (sha256 {got}, expected {sha}); partial file deleted")
        else:
            raise DownloadError(
                f"could not download {name}; tried:\n  " + "\n  ".join(problems or ["(no mirrors given)"])
                + f"\nIf you are offline, place the files {sorted(FILES)} in {root} yourself.")
    return root


def _fetch(url: str, part: Path, timeout: float, resume: bool = True) -> None:
    """Download `url` into `part`, appending if the server honours a Range request."""
    start = part.stat().st_size if resume and part.is_file() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is no prefix we can extend
            return _fetch(url, part, timeout, resume=False)
        raise
    with response:
        status = getattr(response, "status", None)
        content_range = response.headers.get("Content-Range", "") if response.headers else ""
        appending = start and status == 206 and content_range.startswith(f"bytes {start}-")
        with open(part, "ab" if appending else "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)


def load_mnist(root: str | Path | None = None, split: str = "train", with_label: bool = True,
               captions: bool | str = False, limit: int | None = None, download: bool = False) -> RawData:
    """MNIST `split` as RawData: "image" uint8 [N,1,28,28], optional "label" and "text".

    captions=True (or "digit") names the digit; captions="partial" also names, in some
    captions, the stroke thickness and/or the slant, and adds both to `targets` (see
    stroke_properties).
    """
    if split not in SPLITS:
        raise InputError(f"unknown MNIST split {split!r}; allowed: {sorted(SPLITS)}")
    if isinstance(captions, str) and captions in ("digit", "partial"):
        style = captions
    elif isinstance(captions, (bool, np.bool_)):
        style = "digit" if captions else None
    else:
        raise InputError(f"captions must be True, False, 'digit' or 'partial', got {captions!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    root = Path(root) if root is not None else default_root()
    names = SPLITS[split]
    missing = [n for n in names if not (root / n).is_file()]
    if missing and download:
        download_mnist(root)
    elif missing:
        raise InputError(f"MNIST files {missing} are missing from {root} (expected {list(names)}). "
                         "Pass download=True to fetch them, or place them there yourself.")
    images = read_idx(root / names[0], IMAGES_MAGIC)
    labels = read_idx(root / names[1], LABELS_MAGIC).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
    templates = np.random.default_rng(list(SPLITS).index(split)).integers(
        len(CAPTION_TEMPLATES), size=len(labels))
    stop = len(labels) if limit is None else min(limit, len(labels))
    # Properties and partial captions are worked out on the whole split (medians per digit,
    # random draws), so `limit` keeps a prefix of the same captions.
    props, plain = _stroke_classes(images, labels) if style == "partial" else ({}, {})
    partial = _partial_captions(labels, props, plain, split) if props else None
    images, labels, templates = images[:stop, None], labels[:stop], templates[:stop]
    from omnivae.modalities import CategoricalModality, ImageModality, TextModality

    mods, kinds = {"image": images}, {"image": ImageModality.kind}
    targets = {"digit": labels.copy()}  # first: coherence maps parse_digit_caption's int to it
    info = {"source": "mnist", "split": split, "classes": {"digit": list(DIGITS), "label": list(DIGITS)}}
    if with_label:
        mods["label"], kinds["label"] = labels, CategoricalModality.kind
    if style == "digit":
        mods["text"] = [CAPTION_TEMPLATES[t].format(d=DIGITS[y]) for t, y in zip(templates, labels)]
        info["named"] = {"digit": np.ones(stop, dtype=bool)}
    elif style == "partial":
        texts, named = partial
        mods["text"] = texts[:stop]
        info["named"] = {"digit": np.ones(stop, dtype=bool), **{a: m[:stop] for a, m in named.items()}}
        targets.update({a: v[:stop] for a, v in props.items()})
        info["classes"].update({a: list(names) for a, names in PROPERTIES.items()})
    if style:
        kinds["text"] = TextModality.kind
        info["captions"] = style
    return RawData(mods, kinds, targets=targets, info=info)


def stroke_measures(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the ink pixel count (pixels >= 128) and the horizontal shear -mu11/mu02 of the
    intensity-weighted second moments (how many columns the ink moves right per row up).
    images: [N,28,28] or [N,1,H,W] grey values."""
    images = np.asarray(images)
    images = images.reshape(len(images), images.shape[-2], images.shape[-1])
    ink = (images >= 128).sum(axis=(1, 2))
    rows = np.arange(images.shape[1], dtype=np.float64)
    cols = np.arange(images.shape[2], dtype=np.float32)
    per_row = np.empty(images.shape[:2])        # [N,H]: ink weight of each row
    row_x = np.empty(images.shape[:2])          # [N,H]: sum over each row of weight * x
    for start in range(0, len(images), 8192):   # chunks: a float copy of all of MNIST is 190 MB
        w = images[start:start + 8192].astype(np.float32)
        per_row[start:start + 8192] = w.sum(axis=2)
        row_x[start:start + 8192] = w @ cols
    mass = np.maximum(per_row.sum(axis=1), 1e-9)
    y_mean = per_row @ rows / mass
    x_mean = row_x.sum(axis=1) / mass
    mu11 = row_x @ rows / mass - x_mean * y_mean
    mu02 = per_row @ rows**2 / mass - y_mean**2
    return ink, -mu11 / np.maximum(mu02, 1e-9)  # y points down: top to the right is mu11 < 0


def stroke_properties(images: np.ndarray, digits: np.ndarray, plain: bool = False) -> dict[str, np.ndarray]:
    """Per image, class indices of the PROPERTIES, computed from the pixels (stroke_measures).

    thickness: 1 ("thick") if the ink count is above the median of the images of the same digit
    among `images`, else 0 ("thin").
    slant: below -SLANT_THRESHOLD is 0 ("slanted left"), above +SLANT_THRESHOLD is 2 ("slanted
    right"), else 1 ("upright").
    plain=True: instead, whether each property is plain to see, far enough from its class
    boundary that a reader would name it: the ink count at least THICKNESS_MARGIN x the median
    away from the median; the shear at least SLANT_MARGIN away from +-SLANT_THRESHOLD.
    images: [N,28,28] or [N,1,H,W] grey values; digits: int [N].
    """
    return _stroke_classes(images, digits)[1 if plain else 0]


def _stroke_classes(images: np.ndarray, digits: np.ndarray) -> tuple[dict, dict]:
    """stroke_properties with plain=False and plain=True, from one pass over the pixels."""
    digits = np.asarray(digits)
    if len(digits) != len(images):
        raise InputError(f"{len(images)} images but {len(digits)} digits")
    ink, shear = stroke_measures(images)
    median = np.zeros(len(ink))
    for d in np.unique(digits):
        median[digits == d] = np.median(ink[digits == d])
    slant = np.where(shear < -SLANT_THRESHOLD, 0, np.where(shear > SLANT_THRESHOLD, 2, 1)).astype(np.int64)
    classes = {"thickness": (ink > median).astype(np.int64), "slant": slant}
    plain = {"thickness": np.abs(ink - median) >= THICKNESS_MARGIN * median,
             "slant": np.abs(np.abs(shear) - SLANT_THRESHOLD) >= SLANT_MARGIN}
    return classes, plain


def _partial_captions(labels: np.ndarray, props: dict[str, np.ndarray], plain: dict[str, np.ndarray], split: str):
    """Captions naming the digit and, each with probability NAMED_RATE, every property that is
    plain to see."""
    rng = np.random.default_rng([list(SPLITS).index(split), 1])
    named = {a: (rng.random(len(labels)) < NAMED_RATE) & plain[a] for a in PROPERTIES}
    pick = rng.integers(1 << 30, size=len(labels))
    texts = []
    for i, y in enumerate(labels.tolist()):
        which = tuple(a for a in PROPERTIES if named[a][i])
        pool = PARTIAL_TEMPLATES[which]
        texts.append(pool[pick[i] % len(pool)].format(
            d=DIGITS[y], t=PROPERTIES["thickness"][props["thickness"][i]],
            s=PROPERTIES["slant"][props["slant"][i]]))
    return texts, named


def parse_digit_caption(text: str) -> int | None:
    """Digit named in a caption, as a word ("seven") or numeral ("7"); None if absent or ambiguous."""
    tokens = re.findall(r"[a-z]+|\d", str(text).lower())
    found = {DIGITS.index(t) if t in DIGITS else int(t) for t in tokens if t in DIGITS or t.isdigit()}
    return found.pop() if len(found) == 1 else None


def parse_mnist_caption(text: str) -> dict[str, int | None]:
    """Class index of the digit and of each of the PROPERTIES a caption names (None if
    absent or contradictory), e.g. "a thick seven, slanted left" -> digit 7, thickness 1, slant 0."""
    tokens = re.findall(r"[a-z]+", str(text).lower())
    grams = set(tokens) | {" ".join(p) for p in zip(tokens, tokens[1:])}
    out: dict[str, int | None] = {"digit": parse_digit_caption(text)}
    for a, names in PROPERTIES.items():
        found = [i for i, name in enumerate(names) if name in grams]
        out[a] = found[0] if len(found) == 1 else None
    return out


def named_mnist_attributes(text: str) -> set[str]:
    """Attributes (digit, thickness, slant) a caption names unambiguously."""
    return {a for a, i in parse_mnist_caption(text).items() if i is not None}
