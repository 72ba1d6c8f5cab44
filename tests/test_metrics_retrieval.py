import numpy as np
import pytest
import torch

from omnivae.errors import InputError
from omnivae.metrics.retrieval import (
    median_rank, ranks, recall_at_k, relevance_from_labels, retrieval_report, similarity,
)


def test_similarity_metrics_match_hand_values():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cos = similarity(q, g, "cosine")
    assert torch.allclose(cos, torch.tensor([[1.0, 0.0, 2**-0.5], [0.0, 1.0, 2**-0.5]]), atol=1e-6)
    assert torch.allclose(similarity(q, g, "dot"), torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 2.0]]))
    euc = similarity(q, g, "euclidean")
    assert torch.allclose(euc[0], -torch.tensor([1.0, 2**0.5, 1.0]), atol=1e-6)


def test_perfect_ranking():
    scores = torch.eye(20) + 0.01 * torch.rand(20, 20)
    relevant = torch.eye(20, dtype=torch.bool)
    assert ranks(scores, relevant).tolist() == [1] * 20
    assert recall_at_k(scores, relevant, (1, 5)) == {"R@1": 1.0, "R@5": 1.0}
    assert median_rank(scores, relevant) == 1.0


def test_reversed_ranking_puts_relevant_last():
    m = 10
    scores = torch.arange(m, dtype=torch.float).repeat(4, 1)  # item 0 scores lowest
    relevant = torch.zeros(4, m, dtype=torch.bool)
    relevant[:, 0] = True
    assert ranks(scores, relevant).tolist() == [m] * 4
    assert recall_at_k(scores, relevant, (1, 5, 10)) == {"R@1": 0.0, "R@5": 0.0, "R@10": 1.0}
    assert median_rank(scores, relevant) == m


def test_rank_uses_best_relevant_item_and_ties_count_against():
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.1], [1.0, 1.0, 1.0, 0.0]])
    relevant = torch.tensor([[False, False, True, True], [True, False, False, False]])
    assert ranks(scores, relevant).tolist() == [2, 3]


def test_random_scores_give_recall_near_k_over_m():
    gen = torch.Generator().manual_seed(0)
    n, m = 4000, 50
    scores = torch.rand(n, m, generator=gen)
    relevant = torch.zeros(n, m, dtype=torch.bool)
    relevant[torch.arange(n), torch.randint(0, m, (n,), generator=gen)] = True
    r = recall_at_k(scores, relevant, (1, 5, 10))
    for k in (1, 5, 10):
        assert abs(r[f"R@{k}"] - k / m) < 0.02
    assert abs(median_rank(scores, relevant) - m / 2) <= 3


def test_relevance_from_labels_single_and_attributes():
    rel = relevance_from_labels(torch.tensor([0, 1]), torch.tensor([1, 0, 1]))
    assert rel.tolist() == [[False, True, False], [True, False, True]]
    q = np.array([[0, 1], [1, 1]])
    g = np.array([[0, 1], [0, 0], [1, 1]])
    assert relevance_from_labels(q, g).tolist() == [[True, False, False], [False, False, True]]


def test_retrieval_report_on_clustered_embeddings():
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(5, 16, generator=gen) * 5
    labels = torch.arange(50) % 5
    q = centers[labels] + 0.1 * torch.randn(50, 16, generator=gen)
    g = centers[labels] + 0.1 * torch.randn(50, 16, generator=gen)
    report = retrieval_report(q, g, labels, labels, ks=(1, 5))
    assert report == {"R@1": 1.0, "R@5": 1.0, "median_rank": 1.0}


@pytest.mark.parametrize("call, word", [
    (lambda: similarity(torch.ones(3, 4), torch.ones(2, 5)), "gallery"),
    (lambda: similarity(torch.ones(3, 4), torch.ones(2, 4), "manhattan"), "metric"),
    (lambda: similarity(torch.full((2, 2), float("nan")), torch.ones(2, 2)), "query"),
    (lambda: ranks(torch.ones(2, 3), torch.ones(2, 4, dtype=torch.bool)), "relevant"),
    (lambda: ranks(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool)), "relevant"),
    (lambda: recall_at_k(torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool), (0,)), "ks"),
    (lambda: relevance_from_labels(torch.ones(3, 2), torch.ones(3)), "gallery_labels"),
    (lambda: retrieval_report(torch.ones(3, 2), torch.ones(4, 2), torch.ones(2), torch.ones(4)),
     "query_labels"),
])
def test_bad_arguments_raise_input_error(call, word):
    with pytest.raises(InputError, match=word):
        call()
