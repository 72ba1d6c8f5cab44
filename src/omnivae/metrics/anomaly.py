"""Anomaly-detection metrics and thresholds; a higher score always means more anomalous."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from omnivae.errors import InputError


def _scores(x, name: str) -> np.ndarray:
    """Flat finite float64 scores, or an InputError naming the argument."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise InputError(f"{name}: expected a non-empty 1-D array [N], received shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: expected finite values, received {int((~np.isfinite(a)).sum())} NaN/inf")
    return a


def _scores_and_labels(scores, is_anomaly) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores, "scores")
    y = np.asarray(is_anomaly.detach().cpu() if hasattr(is_anomaly, "detach") else is_anomaly)
    if y.shape != s.shape:
        raise InputError(f"is_anomaly: expected shape {s.shape} like scores, received {y.shape}")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise InputError("is_anomaly: expected bools or 0/1 values, received other values")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise InputError(
            f"is_anomaly: expected both normal and anomalous items, received {int(y.sum())} "
            f"anomalies out of {y.size}"
        )
    return s, y


def auroc(scores, is_anomaly) -> float:
    """Area under the ROC curve: 1 is perfect, 0.5 is chance, 0 is perfectly inverted."""
    s, y = _scores_and_labels(scores, is_anomaly)
    return float(roc_auc_score(y, s))


def average_precision(scores, is_anomaly) -> float:
    """Average precision with anomalies as the positive class (chance equals their share)."""
    s, y = _scores_and_labels(scores, is_anomaly)
    return float(average_precision_score(y, s))


def threshold_from_contamination(scores, rate: float) -> float:
    """Threshold above which a fraction `rate` of the given scores lies."""
    s = _scores(scores, "scores")
    if not 0.0 < rate < 1.0:
        raise InputError(f"rate: expected a fraction in (0, 1), received {rate!r}")
    return float(np.quantile(s, 1.0 - rate))


def threshold_from_validation(normal_scores, fpr: float = 0.05) -> float:
    """Threshold that flags about a fraction `fpr` of held-out normal scores (score > threshold)."""
    s = _scores(normal_scores, "normal_scores")
    if not 0.0 < fpr < 1.0:
        raise InputError(f"fpr: expected a fraction in (0, 1), received {fpr!r}")
    return float(np.quantile(s, 1.0 - fpr))
