import numpy as np
import pytest
import torch

from omnivae.errors import InputError
from omnivae.metrics.fid import feature_frechet_distance, frechet_distance


def exact_gaussian_sample(n, mean, var, seed):
    """Samples whose empirical mean and covariance equal mean and diag(var) exactly."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x * np.sqrt(var) + mean


def test_identical_sets_are_zero():
    a = np.random.default_rng(0).normal(size=(200, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_shift_gives_squared_norm():
    a = np.random.default_rng(1).normal(size=(300, 5))
    d = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(a, a + d) == pytest.approx((d**2).sum(), rel=1e-8)


def test_closed_form_diagonal_gaussians():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    a = exact_gaussian_sample(500, mu_a, var_a, 2)
    b = exact_gaussian_sample(400, mu_b, var_b, 3)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-10)


def test_symmetric_for_general_covariances_and_rank_deficient():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    b = rng.normal(size=(10, 4)) + 1  # fewer samples than a full-rank covariance needs
    b[:, 3] = b[:, 2]
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    assert frechet_distance(a, b) > 0


def test_feature_frechet_distance_uses_feature_fn_in_batches():
    imgs = torch.rand(30, 1, 4, 4)
    calls = []

    def feature_fn(x):
        calls.append(x.shape[0])
        return x.mean(dim=(2, 3)) * 2

    value = feature_frechet_distance(imgs, imgs + 1, feature_fn, batch_size=8)
    assert value == pytest.approx(4.0, rel=1e-5)
    assert calls == [8, 8, 8, 6] * 2


@pytest.mark.parametrize("call, word", [
    (lambda: frechet_distance(np.ones((5, 3)), np.ones((5, 4))), "feats_b"),
    (lambda: frechet_distance(np.ones((1, 3)), np.ones((5, 3))), "feats_a"),
    (lambda: frechet_distance(np.full((3, 2), np.nan), np.ones((3, 2))), "finite"),
    (lambda: feature_frechet_distance(torch.ones(3, 2, 4), torch.ones(3, 2, 5), lambda x: x), "images_b"),
])
def test_bad_arguments_raise_input_error(call, word):
    with pytest.raises(InputError, match=word):
        call()
