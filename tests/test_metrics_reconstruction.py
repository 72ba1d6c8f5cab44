"""Reconstruction MSE and PSNR on held-out data (metrics/reconstruction.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnivae import build_model
from omnivae.data.tensors import TensorData
from omnivae.metrics.reconstruction import psnr, reconstruction_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("image", "label", "vector")


@pytest.fixture
def tiny(make_raw, tiny_config):
    raw = make_raw(12, names=NAMES, mask={"vector": np.arange(12) % 4 != 0})  # 3 vectors missing
    model = build_model(tiny_config("mvae", names=NAMES), raw).eval()
    return model, TensorData.from_raw(model, raw)


def test_psnr():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.25) == pytest.approx(10 * math.log10(4))
    assert psnr(0.0) == math.inf


def test_mse_and_psnr_by_hand(tiny):
    """Decoders stubbed to constants: grey (0.5) images, zero vectors."""
    model, data = tiny
    calls = []

    def generate(batch, given=None, targets=None, mean=False, raw=False, **_):
        calls.append((given, targets[0], mean, raw, len(batch)))
        x = batch.data[targets[0]]
        return {targets[0]: torch.full(x.shape, 0.5) if x.dtype == torch.uint8 else torch.zeros(x.shape)}

    model.generate = generate
    metrics = reconstruction_metrics(model, data, n_max=10, batch_size=4)
    assert set(metrics) == {"image", "vector"}  # labels are scored by coherence, not here
    image = metrics["image"]
    # pixels are 0 or 255: every one is 0.5 away from grey
    assert image["mse"] == pytest.approx(0.25) and image["psnr_db"] == pytest.approx(10 * math.log10(4))
    assert image["n"] == 10
    assert set(image["from"]) == {"label", "vector"}
    assert image["from"]["vector"]["n"] == 7  # rows 0..9 with a vector: not 0, 4, 8
    assert image["from"]["label"]["mse"] == pytest.approx(0.25)
    x = data.data["vector"][:10][data.mask["vector"][:10]].double()
    vec = model.modalities["vector"]
    mean, std = vec.mean.double(), vec.std.double()
    assert metrics["vector"]["n"] == 7
    assert metrics["vector"]["mse"] == pytest.approx(float((x ** 2).mean()))
    standardized = ((0 - mean) / std - (x - mean) / std) ** 2
    assert metrics["vector"]["mse_standardized"] == pytest.approx(float(standardized.mean()))
    assert all(mean and raw for _, _, mean, raw, _ in calls)  # posterior means, model-space outputs
    assert {given[0] if given else None for given, *_ in calls} == {None, "label", "vector", "image"}
    assert max(size for *_, size in calls) <= 4


def test_real_reconstructions_match_a_direct_computation(tiny):
    model, data = tiny
    metrics = reconstruction_metrics(model, data)
    batch = data.batch()
    gen = model.generate(batch, targets=["image"], mean=True, raw=True)["image"]
    mse = float(((gen - batch.data["image"].float() / 255) ** 2).mean())
    assert metrics["image"]["mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["image"]["psnr_db"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    alone = model.generate(batch, given=["label"], targets=["image"], mean=True, raw=True)["image"]
    mse_label = float(((alone - batch.data["image"].float() / 255) ** 2).mean())
    assert metrics["image"]["from"]["label"]["mse"] == pytest.approx(mse_label, rel=1e-5)
    present = batch.mask["vector"]
    vec = model.generate(batch, targets=["vector"], mean=True, raw=True)["vector"][present]
    mse_vector = float(((vec - batch.data["vector"][present]) ** 2).mean())
    assert metrics["vector"]["mse"] == pytest.approx(mse_vector, rel=1e-4)


def test_a_single_modality_has_no_from(make_raw, tiny_config):
    raw = make_raw(8, names=("image",))
    model = build_model(tiny_config("vae", names=("image",)), raw).eval()
    metrics = reconstruction_metrics(model, TensorData.from_raw(model, raw))
    assert set(metrics) == {"image"} and "from" not in metrics["image"] and metrics["image"]["n"] == 8
