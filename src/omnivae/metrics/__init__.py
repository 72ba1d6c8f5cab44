"""Evaluation metrics: pure functions over tensors and arrays, independent of model code."""
from omnivae.metrics.anomaly import (
    auroc,
    average_precision,
    threshold_from_contamination,
    threshold_from_validation,
)
from omnivae.metrics.captions import attribute_accuracy, bleu, exact_match, token_accuracy
from omnivae.metrics.classifier import (
    build_classifier,
    cached_classifier,
    predict,
    train_classifier,
)
from omnivae.metrics.fid import feature_frechet_distance, frechet_distance
from omnivae.metrics.probe import kmeans_scores, linear_probe
from omnivae.metrics.retrieval import (
    median_rank,
    ranks,
    recall_at_k,
    relevance_from_labels,
    retrieval_report,
    similarity,
)

__all__ = [
    "attribute_accuracy", "auroc", "average_precision", "bleu", "build_classifier",
    "cached_classifier", "exact_match", "feature_frechet_distance", "frechet_distance",
    "kmeans_scores", "linear_probe", "median_rank", "predict", "ranks", "recall_at_k",
    "relevance_from_labels", "retrieval_report", "similarity", "threshold_from_contamination",
    "threshold_from_validation", "token_accuracy", "train_classifier",
]
