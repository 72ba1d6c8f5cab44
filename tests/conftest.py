"""Shared tiny fixtures: seeded image + label + vector data and small model configs.

Images are 1x8x8 uint8 with a label-dependent bright band, so tiny models can learn them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

TINY_IMAGE = (1, 8, 8)
TINY_CLASSES = 3


def tiny_arrays(n: int = 16, seed: int = 0, num_classes: int = TINY_CLASSES, vector_dim: int = 4,
                image_shape: tuple[int, int, int] = TINY_IMAGE) -> dict[str, np.ndarray]:
    """numpy arrays {image uint8 [n,C,H,W], label int64 [n], vector float32 [n,F]}."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int64)
    c, h, w = image_shape
    images = (rng.random((n, c, h, w)) < 0.1).astype(np.uint8) * 255
    band = max(1, h // num_classes)
    for i, y in enumerate(labels):
        images[i, :, y * band:(y + 1) * band, :] = 255
    vectors = (rng.normal(size=(n, vector_dim)) + labels[:, None]).astype(np.float32)
    return {"image": images, "label": labels, "vector": vectors}


@pytest.fixture(scope="session")
def make_tensors():
    """Builder: make_tensors(n, seed, ...) -> {name: torch tensor} (see tiny_arrays)."""
    def build(n: int = 16, seed: int = 0, **options) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in tiny_arrays(n, seed, **options).items()}
    return build


@pytest.fixture(scope="session")
def make_raw():
    """Builder: make_raw(n, seed, names=...) -> omnivae.RawData with kinds filled in."""
    from omnivae.data.raw import RawData

    kinds = {"image": "image", "label": "categorical", "vector": "vector"}

    def build(n: int = 48, seed: int = 0, names=("image", "label"), mask=None, **options):
        arrays = tiny_arrays(n, seed, **options)
        return RawData({k: arrays[k] for k in names}, {k: kinds[k] for k in names}, dict(mask or {}))
    return build


@pytest.fixture(scope="session")
def tiny_config():
    """Builder: tiny_config(model, names, latent_dim, **model options) -> a model config dict."""
    specs = {
        "image": {"kind": "image", "shape": list(TINY_IMAGE), "arch": "mlp", "hidden": [32]},
        "label": {"kind": "categorical", "num_classes": TINY_CLASSES, "hidden": [16]},
        "vector": {"kind": "vector", "dim": 4, "hidden": [16]},
    }

    def build(model: str = "mvae", names=("image", "label"), latent_dim: int = 4, **options) -> dict:
        return {"model": model, "latent_dim": latent_dim,
                "modalities": {n: dict(specs[n]) for n in names}, **options}
    return build


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight parallel test runs for
    cores); the previous thread count comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
