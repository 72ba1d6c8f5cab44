"""Anomaly detection: score examples by how badly the model explains them, choose a
threshold on clean validation data, and test on planted anomalies (captions swapped
between examples, corrupted images).

    python examples/detect_anomalies.py            # 6,000 examples, up to 20 epochs
    python examples/detect_anomalies.py --quick    # 300 examples, 1 epoch (OMNIVAE_EXAMPLE_QUICK=1 too)
"""
import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from omnivae.metrics import auroc
from omnivae.run import train_run
from omnivae.tasks.detect import AnomalyDetector, corrupted, mismatched_pairs


def main(quick: bool, out: Path) -> None:
    config = {"data": {"source": "shapes", "options": {"n": 300 if quick else 6000, "level": "easy"}},
              # the scores use the posterior and the decoders only: no conditional prior needed
              "model": {"model": "mopoe", "latent_dim": 16, "conditional_prior": None},
              "train": {"max_epochs": 1 if quick else 20, "batch_size": 64, "progress": False,
                        "num_threads": 1 if quick else None}}  # one thread is faster on tiny batches
    run = train_run(config, out / "run", overwrite=True)
    model, val, test = run.model, run.splits.val, run.splits.test

    # threshold on the negative ELBO so that about 5% of clean validation data is flagged
    detector = AnomalyDetector(model, score_name="neg_elbo").fit(val, fpr=0.05)
    print(f"threshold on neg_elbo: {detector.threshold:.1f}")

    for title, (data, is_anomaly) in {
        "captions swapped": mismatched_pairs(test, "text", fraction=0.25, seed=0),
        "images corrupted": corrupted(test, "image", fraction=0.25, seed=0),
    }.items():
        scores = detector.score(data)              # every score: neg_elbo, nll_<m>, cross_nll_<m>, disagreement
        flagged = detector.predict(scores=scores)  # neg_elbo above the threshold
        print(f"{title}: {int(is_anomaly.sum())} planted, {int(flagged.sum())} flagged, "
              f"{int((flagged & is_anomaly).sum())} of them planted")
        for name, s in scores.items():
            ok = np.isfinite(s)                    # NaN where a score does not apply
            print(f"  AUROC {name}: {auroc(s[ok], is_anomaly[ok]):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and one epoch")
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: a temporary one)")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("OMNIVAE_EXAMPLE_QUICK") == "1"
    if args.out is not None:
        main(quick, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(quick, Path(tmp))
