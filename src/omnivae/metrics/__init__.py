"""Evaluation metrics: pure functions over tensors and arrays, independent of model code.

The names below are imported on first use, so that importing one metric module (coherence, say)
does not import scikit-learn and SciPy for the others."""
from importlib import import_module

_MODULES = {
    "anomaly": ("auroc", "average_precision", "threshold_from_contamination", "threshold_from_validation"),
    "captions": ("attribute_accuracy", "bleu", "exact_match", "token_accuracy"),
    "classifier": ("build_classifier", "cached_classifier", "predict", "train_classifier"),
    "fid": ("feature_frechet_distance", "frechet_distance"),
    "probe": ("kmeans_scores", "linear_probe"),
    "retrieval": ("median_rank", "ranks", "recall_at_k", "relevance_from_labels", "retrieval_report", "similarity"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
