"""MNIST: an IDX reader, a checked and resumable download, and a loader returning RawData."""
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
                os.replace(part, target)
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
               captions: bool = False, limit: int | None = None, download: bool = False) -> RawData:
    """MNIST `split` as RawData: "image" uint8 [N,1,28,28], optional "label" and "text"."""
    if split not in SPLITS:
        raise InputError(f"unknown MNIST split {split!r}; allowed: {sorted(SPLITS)}")
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
    images, labels, templates = images[:stop, None], labels[:stop], templates[:stop]
    mods, kinds = {"image": images}, {"image": "image"}
    if with_label:
        mods["label"], kinds["label"] = labels, "categorical"
    if captions:
        mods["text"] = [CAPTION_TEMPLATES[t].format(d=DIGITS[y]) for t, y in zip(templates, labels)]
        kinds["text"] = "text"
    info = {"source": "mnist", "split": split, "classes": {"digit": list(DIGITS), "label": list(DIGITS)}}
    return RawData(mods, kinds, targets={"digit": labels.copy()}, info=info)


def parse_digit_caption(text: str) -> int | None:
    """Digit named in a caption, as a word ("seven") or numeral ("7"); None if absent or ambiguous."""
    tokens = re.findall(r"[a-z]+|\d", str(text).lower())
    found = {DIGITS.index(t) if t in DIGITS else int(t) for t in tokens if t in DIGITS or t.isdigit()}
    return found.pop() if len(found) == 1 else None
