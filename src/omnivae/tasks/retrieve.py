"""Cross-modal retrieval: index a gallery of one modality by its latent means, then query
it with any other modalities.

score="latent": cosine similarity of latent means (query posterior vs gallery item's
unimodal posterior). score="likelihood": the latent top-M candidates are re-ranked by
the cross-likelihood log p(gallery item | z = query posterior mean), one batched
decoder pass over all query-candidate pairs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import numpy as np
import torch

from omnivae.data.tensors import TensorData
from omnivae.errors import InputError
from omnivae.metrics.retrieval import retrieval_report, similarity
from omnivae.tasks.embed import as_tensor_data, embed

SCORES = ("latent", "likelihood")


@dataclass
class RetrievalResult:
    """Top-K gallery positions [Q, K] (into the gallery data given to the index) and scores [Q, K]."""

    indices: np.ndarray
    scores: np.ndarray


class RetrievalIndex:
    """Gallery embeddings of one modality; examples where it is missing are left out."""

    def __init__(self, model, gallery, modality: str, batch_size: int = 1024):
        self.model = model
        self.modality = model.check_names([modality], "modality")[0]
        self.gallery = as_tensor_data(model, gallery)
        if self.modality not in self.gallery.data:
            raise InputError(f"the gallery has no modality {modality!r}; it has {list(self.gallery.data)}")
        present = self.gallery.mask.get(self.modality, torch.ones(len(self.gallery), dtype=torch.bool))
        self.positions = torch.nonzero(present).flatten()  # gallery rows that are indexed
        if len(self.positions) == 0:
            raise InputError(f"the gallery holds no example with modality {modality!r} present")
        sub = TensorData({self.modality: self.gallery.data[self.modality][self.positions]}, {})
        self.embeddings = torch.from_numpy(embed(model, sub, given=[self.modality], batch_size=batch_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.positions)

    def query(self, batch, given: Sequence[str] | None = None, k: int = 10, score: str = "latent",
              candidates: int = 50) -> RetrievalResult:
        """Top-k gallery items for each query (a Batch, TensorData or dict of user data)."""
        if score not in SCORES:
            raise InputError(f"score: expected one of {SCORES}, received {score!r}")
        if score == "likelihood" and not self.model.decodes_shared_codes:
            raise InputError(f"score='likelihood' needs decoders that read the shared latent alone; "
                             f"{self.model.config.model!r} decodes through more (private latents, conditions or a "
                             "hierarchy): use score='latent'")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k: expected a positive int, received {k!r}")
        k = min(k, len(self))
        q = torch.from_numpy(embed(self.model, batch, given=given, batch_size=self.batch_size))
        sims = similarity(q, self.embeddings)  # [Q, G]
        if score == "latent":
            top = sims.topk(k, dim=1)
            return RetrievalResult(self.positions[top.indices].numpy(), top.values.numpy())
        m = min(len(self), max(k, candidates))
        cand = sims.topk(m, dim=1).indices  # [Q, M] rows of self.embeddings
        ll = self.cross_likelihood(q, cand)
        top = ll.topk(k, dim=1)
        chosen = torch.gather(cand, 1, top.indices)
        return RetrievalResult(self.positions[chosen].numpy(), top.values.numpy())

    @torch.no_grad()
    def cross_likelihood(self, z: torch.Tensor, cand: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """log p(x_gallery[cand[q, j]] | z_q) [Q, M], batched over all pairs."""
        mod = self.model.modalities[self.modality]
        x_all = self.gallery.data[self.modality][self.positions]
        flat = cand.reshape(-1)
        zq = z.repeat_interleave(cand.shape[1], dim=0).to(self.model.device)
        out = []
        for i in range(0, len(flat), chunk):
            x = x_all[flat[i:i + chunk]].to(self.model.device)
            out.append(mod.log_likelihood(zq[i:i + chunk].unsqueeze(0), x)[0].cpu())
        return torch.cat(out).reshape(cand.shape)


def _labels(data: TensorData, rows: torch.Tensor) -> torch.Tensor:
    """Per-example label rows [N, A] from every target that varies, or identity labels."""
    varied = [t for t, v in data.targets.items() if len(torch.unique(v)) > 1]
    if not varied:
        return rows.clone()
    return torch.stack([data.targets[t][rows] for t in varied], dim=1)


def retrieval_metrics(model, data, query_mod: str, gallery_mod: str, ks: Sequence[int] = (1, 5, 10),
                      n_max: int = 1000, both: bool = True, batch_size: int = 1024) -> dict[str, dict[str, float]]:
    """Recall@K and median rank of retrieving `gallery_mod` items with `query_mod` ones (and
    back, with both=True), over examples where both are present; an item is relevant when
    all its varying targets equal the query's (without targets, only its own pair is)."""
    model.check_names([query_mod, gallery_mod], "retrieval modalities")
    if query_mod == gallery_mod:
        raise InputError(f"query and gallery modalities must differ, received {query_mod!r} twice")
    data = as_tensor_data(model, data)
    missing = [m for m in (query_mod, gallery_mod) if m not in data.data]
    if missing:
        raise InputError(f"the data has no modality {missing}; it has {list(data.data)}")
    both_present = torch.ones(len(data), dtype=torch.bool)
    for m in (query_mod, gallery_mod):
        both_present &= data.mask.get(m, torch.ones(len(data), dtype=torch.bool))
    rows = torch.nonzero(both_present).flatten()[:n_max]
    if len(rows) < 2:
        raise InputError(f"retrieval needs at least 2 examples with both {query_mod!r} and {gallery_mod!r}")
    emb = {m: embed(model, TensorData({m: data.data[m][rows]}, {}), given=[m], batch_size=batch_size)
           for m in (query_mod, gallery_mod)}
    labels = _labels(data, rows)
    pairs = permutations((query_mod, gallery_mod)) if both else [(query_mod, gallery_mod)]
    return {f"{a}->{b}": retrieval_report(emb[a], emb[b], labels, labels, ks) for a, b in pairs}


def all_pairs_retrieval(model, data, n_max: int = 1000, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """retrieval_metrics for each pair of the model's modalities present in `data`."""
    data = as_tensor_data(model, data)
    names = [m for m in model.names if m in data.data]
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out.update(retrieval_metrics(model, data, a, b, ks=ks, n_max=n_max))
    return out

