"""Cross-modal retrieval metrics: similarity matrices, ranks, recall@K and median rank."""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F

from omnivae.errors import InputError

METRICS = ("cosine", "euclidean", "dot")


def _tensor(x, name: str, ndims: tuple[int, ...], expected: str) -> torch.Tensor:
    """Convert to a tensor and check its rank, emptiness and finiteness."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim not in ndims:
        raise InputError(f"{name}: expected shape {expected}, received {tuple(t.shape)}")
    if t.numel() == 0:
        raise InputError(f"{name}: expected a non-empty {expected}, received {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise InputError(f"{name}: expected finite values, received NaN or inf")
    return t


def _scores_and_relevant(scores, relevant) -> tuple[torch.Tensor, torch.Tensor]:
    s = _tensor(scores, "scores", (2,), "[N, M]").double()
    r = _tensor(relevant, "relevant", (2,), "[N, M]")
    if r.dtype != torch.bool:
        raise InputError(f"relevant: expected a bool tensor [N, M], received dtype {r.dtype}")
    if r.shape != s.shape:
        raise InputError(
            f"relevant: expected the shape of scores {tuple(s.shape)}, received {tuple(r.shape)}"
        )
    return s, r


def similarity(query, gallery, metric: str = "cosine") -> torch.Tensor:
    """Scores [N, M], higher is more similar; "euclidean" returns the negated distance."""
    q = _tensor(query, "query", (2,), "[N, D]").float()
    g = _tensor(gallery, "gallery", (2,), "[M, D]").float()
    if q.shape[1] != g.shape[1]:
        raise InputError(
            f"gallery: expected [M, {q.shape[1]}] to match query's D, received {tuple(g.shape)}"
        )
    if metric == "cosine":
        return F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    if metric == "dot":
        return q @ g.T
    if metric == "euclidean":
        return -torch.cdist(q, g)
    raise InputError(f"metric: expected one of {METRICS}, received {metric!r}")


def ranks(scores, relevant) -> torch.Tensor:
    """1-based rank of the best-scored relevant item per query; ties count against it."""
    s, r = _scores_and_relevant(scores, relevant)
    missing = ~r.any(dim=1)
    if missing.any():
        rows = torch.nonzero(missing).flatten()[:5].tolist()
        raise InputError(f"relevant: every query needs a relevant item, rows {rows} have none")
    best = s.masked_fill(~r, -torch.inf).max(dim=1, keepdim=True).values
    return 1 + ((s >= best) & ~r).sum(dim=1)


def recall_at_k(scores, relevant, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Fraction of queries whose first relevant item is within the top k, as {"R@k": value}."""
    if len(ks) == 0 or any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
        raise InputError(f"ks: expected a non-empty sequence of positive ints, received {ks!r}")
    rank = ranks(scores, relevant)
    return {f"R@{int(k)}": (rank <= k).double().mean().item() for k in ks}


def median_rank(scores, relevant) -> float:
    """Median over queries of the rank of the first relevant item (1 is perfect)."""
    return float(np.median(ranks(scores, relevant).numpy()))


def relevance_from_labels(query_labels, gallery_labels) -> torch.Tensor:
    """Bool [N, M]: same label ([N] labels) or all attributes equal ([N, A] labels)."""
    q = _tensor(query_labels, "query_labels", (1, 2), "[N] or [N, A]")
    g = _tensor(gallery_labels, "gallery_labels", (1, 2), "[M] or [M, A]")
    if q.ndim != g.ndim or q.shape[1:] != g.shape[1:]:
        raise InputError(
            f"gallery_labels: expected the trailing shape of query_labels {tuple(q.shape[1:])}, "
            f"received {tuple(g.shape)}"
        )
    if q.ndim == 1:
        return q[:, None] == g[None, :]
    return (q[:, None, :] == g[None, :, :]).all(dim=2)


def retrieval_report(
    query_emb, gallery_emb, query_labels, gallery_labels,
    ks: Sequence[int] = (1, 5, 10), metric: str = "cosine",
) -> dict[str, float]:
    """R@K for each k plus "median_rank", retrieving gallery items that share the query's labels."""
    scores = similarity(query_emb, gallery_emb, metric)
    n, m = scores.shape
    ql, gl = torch.as_tensor(query_labels), torch.as_tensor(gallery_labels)
    if ql.shape[:1] != (n,):
        raise InputError(f"query_labels: expected [{n}] or [{n}, A], received {tuple(ql.shape)}")
    if gl.shape[:1] != (m,):
        raise InputError(f"gallery_labels: expected [{m}] or [{m}, A], received {tuple(gl.shape)}")
    relevant = relevance_from_labels(ql, gl)
    report = recall_at_k(scores, relevant, ks)
    report["median_rank"] = median_rank(scores, relevant)
    return report
