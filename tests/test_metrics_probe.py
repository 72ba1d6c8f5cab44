import numpy as np
import pytest

from omnivae.errors import InputError
from omnivae.metrics.probe import kmeans_scores, linear_probe


def blobs(n=300, k=3, d=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 10
    y = np.arange(n) % k
    return centers[y] + spread * rng.normal(size=(n, d)), y


def test_separated_blobs_are_easy():
    z, y = blobs()
    assert linear_probe(z[:200], y[:200], z[200:], y[200:]) == 1.0
    scores = kmeans_scores(z, y + 7)  # arbitrary label values are matched to clusters
    assert scores["accuracy"] == 1.0
    assert scores["nmi"] == pytest.approx(1.0)


def test_random_labels_are_near_chance():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(600, 8))
    y = rng.integers(0, 4, size=600)
    assert abs(linear_probe(z[:400], y[:400], z[400:], y[400:]) - 0.25) < 0.1
    scores = kmeans_scores(z, y)
    assert scores["accuracy"] < 0.4
    assert scores["nmi"] < 0.05


def test_hungarian_matching_with_permuted_clusters():
    z = np.array([[0.0], [0.1], [10.0], [10.1], [20.0], [20.1]])
    y = np.array([2, 2, 0, 0, 1, 1])
    assert kmeans_scores(z, y, seed=3)["accuracy"] == 1.0


@pytest.mark.parametrize("call, word", [
    (lambda: linear_probe(np.ones((4, 2)), [0, 1, 0], np.ones((2, 2)), [0, 1]), "train_y"),
    (lambda: linear_probe(np.ones((4, 2)), [0, 1, 0, 1], np.ones((2, 3)), [0, 1]), "test_z"),
    (lambda: linear_probe(np.ones((2, 2)), [0, 0], np.ones((2, 2)), [0, 1]), "two classes"),
    (lambda: kmeans_scores(np.full((3, 2), np.nan), [0, 1, 0]), "finite"),
    (lambda: kmeans_scores(np.ones((3, 2)), [0, 1, 0], n_clusters=5), "n_clusters"),
])
def test_bad_arguments_raise_input_error(call, word):
    with pytest.raises(InputError, match=word):
        call()
