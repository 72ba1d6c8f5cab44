import gzip
import hashlib
import io
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from omnivae.data import mnist as mn
from omnivae.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_files = pytest.mark.skipif(
    not all((SHARED / name).is_file() for name in mn.FILES),
    reason=f"MNIST files not found in {SHARED}")


@pytest.fixture(scope="module")
def train():
    return mn.load_mnist(SHARED, "train", captions=True)


def idx_bytes(array: np.ndarray, type_byte: int) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.dtype(mn.IDX_DTYPES[type_byte])).tobytes()


@needs_files
def test_checksums_of_shared_files():
    for name, sha in mn.FILES.items():
        assert hashlib.sha256((SHARED / name).read_bytes()).hexdigest() == sha


@needs_files
def test_train_split(train):
    images, labels = train.modalities["image"], train.modalities["label"]
    assert images.shape == (60000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 255
    assert np.bincount(labels).tolist() == TRAIN_COUNTS
    assert np.array_equal(train.targets["digit"], labels)
    assert train.kinds == {"image": "image", "label": "categorical", "text": "text"}
    assert train.info["source"] == "mnist"
    assert train.info["classes"]["digit"][7] == "seven" == train.info["classes"]["label"][7]
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels


@needs_files
def test_captions(train):
    captions = train.modalities["text"]
    assert len(captions) == 60000
    assert {mn.parse_digit_caption(c) for c in captions[:200]} == set(range(10))
    assert all(mn.parse_digit_caption(c) == y for c, y in zip(captions, train.targets["digit"]))
    used = {next(t for t in mn.CAPTION_TEMPLATES if c == t.format(d=mn.DIGITS[y]))
            for c, y in zip(captions[:300], train.targets["digit"][:300])}
    assert used == set(mn.CAPTION_TEMPLATES)
    again = mn.load_mnist(SHARED, "train", with_label=False, captions=True, limit=300)
    assert again.modalities["text"] == captions[:300]
    assert set(again.modalities) == {"image", "text"}


@pytest.fixture(scope="module")
def partial():
    return mn.load_mnist(SHARED, "test", captions="partial")


@needs_files
def test_old_captions_unchanged_by_partial_option(train):
    """captions=True: no property targets or class lists, every caption names the digit only."""
    assert set(train.targets) == {"digit"} and set(train.info["classes"]) == {"digit", "label"}
    assert train.info["named"]["digit"].all() and set(train.info["named"]) == {"digit"}
    assert all(mn.named_mnist_attributes(c) == {"digit"} for c in train.modalities["text"][:500])
    same = mn.load_mnist(SHARED, "train", captions="digit", limit=200)
    assert same.modalities["text"] == train.modalities["text"][:200]


@needs_files
def test_partial_captions(partial):
    captions, targets, named = partial.modalities["text"], partial.targets, partial.info["named"]
    assert len(captions) == 10000 and partial.info["captions"] == "partial"
    assert list(targets) == ["digit", "thickness", "slant"]  # digit first: coherence scores int parses as it
    assert partial.info["classes"]["thickness"] == ["thin", "thick"]
    assert partial.info["classes"]["slant"] == ["slanted left", "upright", "slanted right"]
    assert np.bincount(targets["digit"]).tolist() == TEST_COUNTS
    assert 0.45 < targets["thickness"].mean() < 0.55  # split at the median of each digit
    assert all(np.bincount(targets["slant"], minlength=3) > 1000)
    for i, c in enumerate(captions):
        assert mn.parse_digit_caption(c) == targets["digit"][i], c
        parsed = mn.parse_mnist_caption(c)
        for a in ("digit", "thickness", "slant"):
            assert parsed[a] == (int(targets[a][i]) if named[a][i] else None), (c, a)
        assert mn.named_mnist_attributes(c) == {a for a in named if named[a][i]}, c
    assert named["digit"].all()
    for a in ("thickness", "slant"):
        assert 0.3 < named[a].mean() < 0.7
    both = named["thickness"] & named["slant"]
    assert 0.1 < both.mean() < 0.4 and 0.2 < (~named["thickness"] & ~named["slant"]).mean() < 0.5
    used = {t for t in sum(mn.PARTIAL_TEMPLATES.values(), ()) for c in captions[:400]
            if any(c == t.format(d=d, t=th, s=sl) for d in mn.DIGITS for th in mn.PROPERTIES["thickness"]
                   for sl in mn.PROPERTIES["slant"])}
    assert used == set(sum(mn.PARTIAL_TEMPLATES.values(), ()))


@needs_files
def test_partial_captions_name_only_plain_properties(partial):
    """A named property is far from its class boundary (measured here with plain numpy); about
    half of the plain ones are named, none of the others."""
    images, digits = partial.modalities["image"][:, 0], partial.targets["digit"]
    named = partial.info["named"]
    ink = (images >= 128).sum(axis=(1, 2))
    median = np.array([np.median(ink[digits == d]) for d in range(10)])[digits]
    plain_thickness = np.abs(ink - median) >= mn.THICKNESS_MARGIN * median
    assert not (named["thickness"] & ~plain_thickness).any()
    assert 0.4 < named["thickness"][plain_thickness].mean() < 0.6
    assert 0.15 < (~plain_thickness).mean() < 0.4  # the margin leaves out the digits near the median
    _, shear = mn.stroke_measures(images)
    near = np.abs(np.abs(shear) - mn.SLANT_THRESHOLD) < mn.SLANT_MARGIN
    assert not (named["slant"] & near).any() and 0.4 < named["slant"][~near].mean() < 0.6
    assert np.array_equal(mn.stroke_properties(images, digits, plain=True)["thickness"], plain_thickness)


@needs_files
def test_partial_captions_deterministic_and_limit_keeps_a_prefix(partial):
    again = mn.load_mnist(SHARED, "test", with_label=False, captions="partial", limit=300)
    assert again.modalities["text"] == partial.modalities["text"][:300]
    assert all(np.array_equal(again.targets[a], partial.targets[a][:300]) for a in partial.targets)
    assert all(np.array_equal(again.info["named"][a], partial.info["named"][a][:300]) for a in again.info["named"])
    assert np.array_equal(again.modalities["image"], partial.modalities["image"][:300])
    digit_only = mn.load_mnist(SHARED, "test", captions=True, limit=300)
    assert digit_only.modalities["text"] != again.modalities["text"]


@needs_files
@pytest.mark.parametrize("index, caption, thickness, slant", [
    (2, "the digit one, slanted right", None, 2),      # a long thin "/" stroke
    (46, "a handwritten one, slanted left", None, 0),   # a backslash stroke
    (14, "a thick one", 1, None),                        # a 3-4 pixel wide bar
    (19, "the digit four in a thin stroke", 0, None),    # 1-2 pixel wide strokes
    (34, "the digit seven in a thick stroke, slanted right", 1, 2),  # a 3-4 pixel wide "7" leaning right
])
def test_partial_handpicked(partial, index, caption, thickness, slant):
    """Captions and targets of test examples that were looked at, checked again against
    the pixels with simpler measures than the loader's."""
    image = partial.modalities["image"][index, 0]
    assert partial.modalities["text"][index] == caption
    ink = image >= 128
    if thickness is not None:
        assert partial.targets["thickness"][index] == thickness
        same = partial.targets["digit"] == partial.targets["digit"][index]
        counts = (partial.modalities["image"][same, 0] >= 128).sum(axis=(1, 2))
        assert (ink.sum() > np.median(counts)) == bool(thickness)
    if slant is not None:
        assert partial.targets["slant"][index] == slant
        rows = np.flatnonzero(ink.any(1))
        third = len(rows) // 3
        top = np.nonzero(ink[rows[:third]])[1].mean()
        bottom = np.nonzero(ink[rows[-third:]])[1].mean()
        assert (top - bottom > 3) if slant == 2 else (bottom - top > 3)


def test_stroke_properties_on_drawn_lines():
    """Lines drawn with numpy: the thick ones (per digit), and the slant of each."""
    def line(top_x, bottom_x, width):
        image = np.zeros((28, 28), dtype=np.uint8)
        for y in range(4, 24):
            x = top_x + (bottom_x - top_x) * (y - 4) / 19
            image[y, int(round(x - width / 2)): int(round(x + width / 2))] = 255
        return image
    images = np.stack([line(14, 14, 2), line(14, 14, 5), line(19, 9, 2), line(9, 19, 5),
                       line(15, 13, 3), line(8, 20, 3)])
    digits = np.array([1, 1, 7, 7, 4, 4])
    props = mn.stroke_properties(images[:, None], digits)
    assert props["thickness"].tolist() == [0, 1, 0, 1, 0, 1]  # 4: the longer slanted line has more ink
    assert props["slant"].tolist() == [1, 1, 2, 0, 1, 0]
    assert mn.stroke_properties(images, digits)["slant"].tolist() == [1, 1, 2, 0, 1, 0]  # [N,28,28] too


def test_parse_mnist_caption():
    assert mn.parse_mnist_caption("A THICK seven, slanted  LEFT") == {"digit": 7, "thickness": 1, "slant": 0}
    assert mn.parse_mnist_caption("the digit 3 in a thin stroke") == {"digit": 3, "thickness": 0, "slant": None}
    assert mn.parse_mnist_caption("an upright two") == {"digit": 2, "thickness": None, "slant": 1}
    assert mn.parse_mnist_caption("a thin thick one, left") == {"digit": 1, "thickness": None, "slant": None}
    assert mn.named_mnist_attributes("a handwritten nine, slanted right") == {"digit", "slant"}
    assert mn.parse_digit_caption("the digit four in a thick stroke, upright") == 4


@pytest.mark.parametrize("captions", ["yes", "Partial", 1, None])
def test_bad_captions_option(tmp_path, captions):
    with pytest.raises(InputError, match="captions must be"):
        mn.load_mnist(tmp_path, "test", captions=captions)


@needs_files
def test_test_split_and_limit():
    test = mn.load_mnist(SHARED, "test")
    assert test.modalities["image"].shape == (10000, 1, 28, 28)
    assert np.bincount(test.targets["digit"]).tolist() == TEST_COUNTS
    small = mn.load_mnist(SHARED, "test", with_label=False, limit=50)
    assert len(small) == 50 and "label" not in small.modalities
    assert np.array_equal(small.modalities["image"], test.modalities["image"][:50])


def test_parse_digit_caption():
    assert mn.parse_digit_caption("A Handwritten  SEVEN") == 7
    assert mn.parse_digit_caption("the digit 3") == 3
    assert mn.parse_digit_caption("a zero or a one") is None
    assert mn.parse_digit_caption("a scribble") is None


def test_read_idx_general_dtypes(tmp_path):
    values = np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000
    (tmp_path / "a.idx").write_bytes(idx_bytes(values, 0x0B))
    out = mn.read_idx(tmp_path / "a.idx")
    assert out.dtype == np.int16 and np.array_equal(out, values)
    floats = np.linspace(0, 1, 5, dtype=np.float32)
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(idx_bytes(floats, 0x0D)))
    assert np.array_equal(mn.read_idx(tmp_path / "b.idx.gz"), floats)


@needs_files
def test_truncated_files_raise(tmp_path):
    raw = (SHARED / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cut.gz"):
        mn.read_idx(tmp_path / "cut.gz")
    plain = gzip.decompress(raw)
    (tmp_path / "cut.idx").write_bytes(plain[:-10])
    with pytest.raises(InputError, match=r"cut.idx.*10000 data bytes.*found 9990"):
        mn.read_idx(tmp_path / "cut.idx")
    (tmp_path / "tiny.idx").write_bytes(plain[:6])
    with pytest.raises(InputError, match="header"):
        mn.read_idx(tmp_path / "tiny.idx")


@needs_files
def test_wrong_magic_raises(tmp_path):
    labels = gzip.decompress((SHARED / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "bad.idx").write_bytes(b"\x12\x34" + labels[2:])
    with pytest.raises(InputError, match="not a valid IDX header"):
        mn.read_idx(tmp_path / "bad.idx")
    # labels where images are expected: a valid IDX file, but the wrong magic for load_mnist
    shutil.copy(SHARED / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    shutil.copy(SHARED / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(InputError, match="expected magic number 2051, found 2049"):
        mn.load_mnist(tmp_path, "test")


def test_missing_files_message(tmp_path):
    with pytest.raises(InputError) as info:
        mn.load_mnist(tmp_path, "test")
    message = str(info.value)
    assert str(tmp_path) in message and "download=True" in message
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    with pytest.raises(InputError, match="'valid'"):
        mn.load_mnist(tmp_path, "valid")


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIVAE_DATA_DIR", str(tmp_path))
    assert mn.default_root() == tmp_path / "mnist"
    monkeypatch.delenv("OMNIVAE_DATA_DIR")
    assert mn.default_root() == Path.home() / ".cache" / "omnivae" / "mnist"


class FakeServer:
    """Stands in for urllib.request.urlopen: serves bytes by URL, honouring Range if asked."""

    def __init__(self, files, honour_range=True, corrupt=()):
        self.files, self.honour_range, self.corrupt = files, honour_range, set(corrupt)
        self.requests = []

    def __call__(self, request, timeout=None):
        url = request.full_url
        rng = request.get_header("Range")
        self.requests.append((url, rng))
        name = url.rsplit("/", 1)[-1]
        if not url.startswith("https://good.example/") or name not in self.files:
            raise urllib.error.URLError("name resolution failed")
        body = self.files[name]
        if name in self.corrupt:
            body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
        response = io.BytesIO(body)
        response.status, response.headers = 200, {}
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            response = io.BytesIO(body[start:])
            response.status = 206
            response.headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        return response


@pytest.fixture
def served():
    if not all((SHARED / name).is_file() for name in mn.FILES):
        pytest.skip(f"MNIST files not found in {SHARED}")
    return {name: (SHARED / name).read_bytes() for name in mn.FILES}


def prefill(root: Path, skip: str) -> None:
    """Put every verified file except `skip` in root, so only `skip` is fetched."""
    root.mkdir(exist_ok=True)
    for name in mn.FILES:
        if name != skip:
            shutil.copy(SHARED / name, root / name)


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_partial_file(tmp_path, monkeypatch, served, honour_range):
    name = "train-labels-idx1-ubyte.gz"
    prefill(tmp_path, name)
    half = len(served[name]) // 2
    (tmp_path / (name + ".part")).write_bytes(served[name][:half])
    server = FakeServer(served, honour_range=honour_range)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    root = mn.download_mnist(tmp_path, mirrors=["https://dead.example/mnist", "https://good.example/mnist/"])
    assert root == tmp_path
    assert (tmp_path / name).read_bytes() == served[name]
    assert not (tmp_path / (name + ".part")).exists()
    assert server.requests == [(f"https://dead.example/mnist/{name}", f"bytes={half}-"),
                               (f"https://good.example/mnist/{name}", f"bytes={half}-")]
    assert mn.load_mnist(tmp_path, "train", limit=5).targets["digit"].tolist() == [5, 0, 4, 1, 9]


def test_download_checksum_mismatch(tmp_path, monkeypatch, served):
    name = "t10k-labels-idx1-ubyte.gz"
    prefill(tmp_path, name)
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer(served, corrupt=[name]))
    with pytest.raises(mn.DownloadError, match="checksum mismatch") as info:
        mn.download_mnist(tmp_path, mirrors=["https://good.example/"])
    assert mn.FILES[name] in str(info.value)
    assert not (tmp_path / name).exists() and not (tmp_path / (name + ".part")).exists()


def test_download_all_mirrors_fail(tmp_path, monkeypatch, served):
    server = FakeServer(served)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    mirrors = ["https://dead.example/a/", "https://down.example/b"]
    with pytest.raises(mn.DownloadError) as info:
        mn.download_mnist(tmp_path / "root", mirrors=mirrors)
    message = str(info.value)
    first = next(iter(mn.FILES))
    assert f"https://dead.example/a/{first}" in message and f"https://down.example/b/{first}" in message
    assert str(tmp_path / "root") in message and "yourself" in message
    assert len(server.requests) == 2


def test_download_from_file_urls(tmp_path, served):
    mn.download_mnist(tmp_path, mirrors=[SHARED.as_uri() + "/"])
    assert all((tmp_path / n).read_bytes() == served[n] for n in mn.FILES)
    before = {n: (tmp_path / n).stat().st_mtime_ns for n in mn.FILES}
    mn.download_mnist(tmp_path, mirrors=[])  # all present and verified: nothing fetched
    assert before == {n: (tmp_path / n).stat().st_mtime_ns for n in mn.FILES}
    data = mn.load_mnist(tmp_path, "test", download=True)
    assert np.bincount(data.targets["digit"]).tolist() == TEST_COUNTS
