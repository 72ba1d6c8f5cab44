"""Latent-space quality probes: a linear classifier and k-means clustering against labels."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from omnivae.errors import InputError


def _array(x, name: str, ndim: int, expected: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != ndim or a.shape[0] == 0:
        raise InputError(f"{name}: expected a non-empty {expected}, received shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError(f"{name}: expected finite values, received NaN or inf")
    return a


def _pair(z, y, zname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    za = _array(z, zname, 2, "[N, D] array").astype(np.float64)
    ya = _array(y, yname, 1, "[N] label array")
    if ya.shape[0] != za.shape[0]:
        raise InputError(f"{yname}: expected [{za.shape[0]}] to match {zname}, received {ya.shape}")
    return za, ya


def linear_probe(train_z, train_y, test_z, test_y) -> float:
    """Test accuracy of a logistic regression on standardised latents."""
    xtr, ytr = _pair(train_z, train_y, "train_z", "train_y")
    xte, yte = _pair(test_z, test_y, "test_z", "test_y")
    if xte.shape[1] != xtr.shape[1]:
        raise InputError(f"test_z: expected [N, {xtr.shape[1]}] like train_z, received {xte.shape}")
    if np.unique(ytr).size < 2:
        raise InputError("train_y: expected at least two classes, received one")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def kmeans_scores(z, y, n_clusters: int | None = None, seed: int = 0) -> dict[str, float]:
    """K-means on latents: accuracy under the best cluster-to-label matching, and NMI."""
    za, ya = _pair(z, y, "z", "y")
    classes, y_idx = np.unique(ya, return_inverse=True)
    k = classes.size if n_clusters is None else n_clusters
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= za.shape[0]:
        raise InputError(f"n_clusters: expected an int in [1, {za.shape[0]}], received {k!r}")
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(za)
    counts = np.zeros((k, classes.size), dtype=np.int64)
    np.add.at(counts, (pred, y_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {
        "accuracy": float(counts[rows, cols].sum() / za.shape[0]),
        "nmi": float(normalized_mutual_info_score(y_idx, pred)),
    }
