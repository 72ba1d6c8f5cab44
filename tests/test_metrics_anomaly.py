import numpy as np
import pytest
import torch

from omnivae.errors import InputError
from omnivae.metrics.anomaly import (
    auroc, average_precision, threshold_from_contamination, threshold_from_validation,
)

LABELS = np.array([0, 0, 0, 1, 1])


def test_perfect_inverted_and_constant_auroc():
    assert auroc([0.1, 0.2, 0.3, 0.8, 0.9], LABELS) == 1.0
    assert auroc([0.9, 0.8, 0.7, 0.2, 0.1], LABELS) == 0.0
    assert auroc(np.ones(5), LABELS) == 0.5
    assert average_precision([0.1, 0.2, 0.3, 0.8, 0.9], LABELS) == 1.0


def test_hand_computed_small_case():
    # anomalies score 0.4 and 0.9; normals 0.1, 0.5, 0.3.
    scores = torch.tensor([0.1, 0.5, 0.3, 0.4, 0.9])
    # pairs (anomaly > normal): 0.4 beats 0.1, 0.3; 0.9 beats all three -> 5 of 6.
    assert auroc(scores, LABELS.astype(bool)) == pytest.approx(5 / 6)
    # ranking: 0.9 (A), 0.5 (N), 0.4 (A): AP = (1/1 + 2/3) / 2.
    assert average_precision(scores, LABELS) == pytest.approx((1 + 2 / 3) / 2)


def test_thresholds():
    scores = np.arange(100, dtype=float)
    t = threshold_from_contamination(scores, 0.1)
    assert (scores > t).mean() == pytest.approx(0.1, abs=0.011)
    normal = np.random.default_rng(0).normal(size=10_000)
    t = threshold_from_validation(normal, fpr=0.05)
    assert t == pytest.approx(1.645, abs=0.05)
    assert (normal > t).mean() == pytest.approx(0.05, abs=0.002)


@pytest.mark.parametrize("call, word", [
    (lambda: auroc([0.1, 0.2], [1, 1]), "both normal and anomalous"),
    (lambda: auroc([0.1, 0.2, 0.3], [0, 1]), "is_anomaly"),
    (lambda: auroc([0.1, float("nan")], [0, 1]), "finite"),
    (lambda: average_precision([], []), "scores"),
    (lambda: auroc([0.1, 0.2], [0, 2]), "0/1"),
    (lambda: threshold_from_contamination([1.0, 2.0], 1.5), "rate"),
    (lambda: threshold_from_validation(np.ones((2, 2))), "normal_scores"),
])
def test_bad_arguments_raise_input_error(call, word):
    with pytest.raises(InputError, match=word):
        call()


def test_importing_the_metrics_package_imports_no_scikit_learn():
    import subprocess
    import sys

    code = ("import sys, omnivae.metrics as m; assert 'sklearn' not in sys.modules, 'eager'; "
            "from omnivae.metrics import auroc, predict; assert m.auroc is auroc and 'auroc' in dir(m); "
            "assert auroc([0.1, 0.9], [0, 1]) == 1.0\n"
            "try:\n    m.nothing\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
