from pathlib import Path

import numpy as np
import pytest

from omnivae.data.mnist import FILES, load_mnist
from omnivae.data.polymnist import TEXTURES, load_polymnist, make_polymnist, modality_style
from omnivae.data.raw import RawData
from omnivae.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not all((SHARED / n).is_file() for n in FILES),
                                reason=f"MNIST files not found in {SHARED}")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(SHARED, "test", limit=3000)


@pytest.fixture(scope="module")
def poly(mnist):
    return make_polymnist(mnist, n_modalities=5, seed=0)


def test_layout(poly, mnist):
    assert len(poly) == len(mnist)
    assert list(poly.modalities) == ["m0", "m1", "m2", "m3", "m4"]
    for images in poly.modalities.values():
        assert images.shape == (3000, 3, 28, 28) and images.dtype == np.uint8
    assert set(poly.kinds.values()) == {"image"}
    assert poly.targets["digit"].dtype == np.int64
    assert poly.info["source_index"].shape == (3000, 5)
    assert poly.info["textures"] == list(TEXTURES)


def test_rows_share_class_with_distinct_images(poly, mnist):
    source = poly.info["source_index"]
    digits = mnist.targets["digit"]
    assert (digits[source] == poly.targets["digit"][:, None]).all()
    ordered = np.sort(source, axis=1)
    assert (ordered[:, 1:] != ordered[:, :-1]).all()


def test_pixels_show_the_recorded_digit(poly, mnist):
    """Full-ink MNIST pixels carry the modality's ink colour; blank ones carry its texture."""
    source = poly.info["source_index"]
    grey = mnist.modalities["image"][:, 0]
    for m in range(5):
        images = poly.modalities[f"m{m}"].transpose(0, 2, 3, 1)  # N,H,W,3
        texture, ink = modality_style(m, seed=0)
        src = grey[source[:, m]]
        assert (images[src == 255] == ink).all()
        blank = images[src == 0]
        assert np.abs(blank.astype(int) - ink).sum(axis=1).min() > 60
        assert blank.mean(axis=0).max() < ink.max()
        # the texture colours under blank pixels come from this modality's texture
        texture_colours = set(map(tuple, texture.reshape(3, -1).T))
        assert all(tuple(c) in texture_colours for c in blank[::997])


def test_modalities_look_different(poly):
    images = [poly.modalities[f"m{m}"].astype(np.int16) for m in range(5)]
    colours = [im.mean(axis=(0, 2, 3)) for im in images]
    for i in range(5):
        for j in range(i + 1, 5):
            assert np.abs(images[i] - images[j]).mean() > 20
            assert np.abs(colours[i] - colours[j]).sum() > 15


def test_class_balance_matches_mnist(poly, mnist):
    assert np.array_equal(poly.targets["digit"], mnist.targets["digit"])
    assert np.bincount(poly.targets["digit"]).tolist() == np.bincount(mnist.targets["digit"]).tolist()


def test_deterministic(mnist):
    part = mnist.subset(slice(0, 400))
    a, b, c = make_polymnist(part, 3, seed=5), make_polymnist(part, 3, seed=5), make_polymnist(part, 3, seed=6)
    assert all(np.array_equal(a.modalities[k], b.modalities[k]) for k in a.modalities)
    assert np.array_equal(a.info["source_index"], b.info["source_index"])
    assert not np.array_equal(a.modalities["m0"], c.modalities["m0"])
    assert not np.array_equal(a.info["source_index"], c.info["source_index"])


@pytest.mark.parametrize("m", [2, 8])
def test_number_of_modalities(mnist, m):
    data = make_polymnist(mnist.subset(slice(0, 500)), n_modalities=m, seed=1)
    assert list(data.modalities) == [f"m{i}" for i in range(m)]
    source = data.info["source_index"]
    assert source.shape == (500, m)
    assert (mnist.targets["digit"][source] == data.targets["digit"][:, None]).all()
    means = np.stack([data.modalities[f"m{i}"].mean(axis=(0, 2, 3)) for i in range(m)])
    assert len({tuple(np.round(row)) for row in means}) == m


def test_n_examples(mnist):
    fewer = make_polymnist(mnist, 2, seed=0, n=1000)
    more = make_polymnist(mnist.subset(slice(0, 100)), 2, seed=0, n=250)
    assert len(fewer) == 1000 and len(more) == 250
    counts = np.bincount(fewer.targets["digit"], minlength=10) / 1000
    expected = np.bincount(mnist.targets["digit"], minlength=10) / len(mnist)
    assert np.abs(counts - expected).max() < 0.04
    assert (mnist.targets["digit"][more.info["source_index"]] == more.targets["digit"][:, None]).all()


def test_load_polymnist():
    data = load_polymnist(SHARED, "test", n_modalities=3, seed=2, limit=200)
    assert len(data) == 200 and list(data.modalities) == ["m0", "m1", "m2"]
    assert data.info["source_index"].max() < 200


def test_bad_input(mnist):
    with pytest.raises(InputError, match="n_modalities"):
        make_polymnist(mnist, n_modalities=0)
    with pytest.raises(InputError, match="uint8"):
        make_polymnist(RawData({"image": np.zeros((4, 3, 28, 28), np.uint8)}, {"image": "image"},
                               targets={"digit": np.zeros(4, np.int64)}))
    with pytest.raises(InputError, match="digit classes"):
        make_polymnist(RawData({"image": np.zeros((4, 1, 28, 28), np.uint8)}, {"image": "image"}))
