"""conditional_coherence and joint_coherence hand what they read and generate to the metrics
that reuse it (evaluation's Fréchet distance), with the same numbers as computing it anew."""
import numpy as np
import torch

from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.metrics.coherence import build_scorers, conditional_coherence, joint_coherence, real_scores
from omnivae.models import build_model


def setup(n=60):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    raw = RawData({"a": (rng.normal(size=(n, 4)) + 2 * labels[:, None]).astype(np.float32),
                   "b": (rng.normal(size=(n, 3)) - labels[:, None]).astype(np.float32)},
                  {"a": "vector", "b": "vector"}, targets={"label": labels})
    torch.manual_seed(0)
    model = build_model({"model": "mopoe", "latent_dim": 3, "modalities": {
        "a": {"kind": "vector", "dim": 4, "hidden": [8]}, "b": {"kind": "vector", "dim": 3, "hidden": [8]}}},
        raw).eval()
    scorers = build_scorers(model, raw, epochs=1)
    return model, TensorData.from_raw(model, raw), scorers


def test_coherence_reads_the_real_data_once_and_keeps_what_it_generated():
    model, data, scorers = setup()
    assert set(scorers) == {"a", "b"}
    plain = conditional_coherence(model, data, scorers, n_max=50, batch_size=16)
    kept: dict = {}
    readable = real_scores(data, scorers, 50)
    assert set(readable) == {"a", "b"} and len(readable["a"]["label"]) == 50
    shared = conditional_coherence(model, data, scorers, n_max=50, batch_size=16, readable=readable, keep=kept)
    assert shared == plain  # the posterior mean: the same outputs, the same scores
    assert set(kept) == {"b->a", "a->b"} and kept["b->a"].shape == (50, 4) and kept["a->b"].shape == (50, 3)
    again = model.generate(data.batch(torch.arange(50)), given=["b"], targets=["a"], mean=True, raw=True)["a"]
    assert torch.allclose(kept["b->a"], again, atol=1e-6)


def test_joint_coherence_keeps_its_samples():
    model, _, scorers = setup()
    kept: dict = {}
    torch.manual_seed(1)
    with_keep = joint_coherence(model, scorers, n=40, keep=kept)
    torch.manual_seed(1)
    assert joint_coherence(model, scorers, n=40) == with_keep
    assert set(kept) == {"prior->a", "prior->b"} and kept["prior->a"].shape == (40, 4)
    torch.manual_seed(1)
    assert torch.allclose(model.sample(40, targets=["a", "b"], raw=True)["a"], kept["prior->a"])
