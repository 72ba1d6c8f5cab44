"""Anomaly detection with a trained model, and benchmark anomalies to test it on.

Per-example scores (higher = more anomalous; NaN where a score does not apply):
- neg_elbo: -[sum_m log p(x_m|z) - KL(q(z|X) || p(z))] with q the joint posterior of the
  present modalities (reconstruction averaged over `n_samples` draws; the model's
  modality weights apply, as in training);
- nll_<m>: -log p(x_m | z) at the joint posterior mean: reconstruction error;
- cross_nll_<m>: -log p(x_m | z) at the posterior mean of the *other* present modalities:
  how well they predict x_m (high for a mismatched pair);
- disagreement: mean symmetric KL between the unimodal posteriors of each pair of
  present modalities (0 with fewer than two present).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from omnivae.data.raw import RawData
from omnivae.errors import InputError
from omnivae.metrics.anomaly import (
    threshold_from_contamination,
    threshold_from_validation,
)
from omnivae.metrics.likelihood import prior_log_prob
from omnivae.tasks.embed import as_tensor_data


def symmetric_kl(mu_a, logvar_a, mu_b, logvar_b) -> torch.Tensor:
    """KL(a||b) + KL(b||a) of diagonal Gaussians, summed over the last dim."""
    va, vb = logvar_a.exp(), logvar_b.exp()
    d2 = (mu_a - mu_b).pow(2)
    return 0.5 * ((va / vb + vb / va - 2.0) + d2 * (1.0 / va + 1.0 / vb)).sum(-1)


def decoded_log_likelihood(model, name: str, z: torch.Tensor, mu, logvar, present, batch) -> torch.Tensor:
    """log p(x_name | z) [S,B] for shared codes z [S,B,D] of examples encoded as (mu, logvar, present):
    through what the model's decoder for `name` reads (a private part, a condition or a level
    of a hierarchy appended or inferred by `decoder_codes`), so every model is scored alike."""
    codes = torch.stack([model.decoder_codes(name, zi, mu, logvar, present) for zi in z])
    return model.modalities[name].log_likelihood(codes, batch.data[name])


class AnomalyDetector:
    """score(data) -> {name: per-example scores}; fit on normal data picks a threshold on
    one score (`score_name`); predict flags examples above it."""

    def __init__(self, model, score_name: str = "neg_elbo", n_samples: int = 1, batch_size: int = 128,
                 seed: int = 0):
        if n_samples < 1 or batch_size < 1:
            raise InputError(f"n_samples and batch_size must be positive, received {n_samples}, {batch_size}")
        self.model, self.score_name = model, score_name
        self.n_samples, self.batch_size, self.seed = n_samples, batch_size, seed
        self.threshold: float | None = None

    def score_names(self, names=None) -> list[str]:
        names = list(self.model.names if names is None else names)
        out = ["neg_elbo"] + [f"nll_{m}" for m in names]
        if len(names) > 1:
            out += [f"cross_nll_{m}" for m in names] + ["disagreement"]
        return out

    @torch.no_grad()
    def score(self, data) -> dict[str, np.ndarray]:
        """Every score for every example of `data` (TensorData or RawData)."""
        data = as_tensor_data(self.model, data)
        was_training = self.model.training
        self.model.eval()
        gen = torch.Generator().manual_seed(self.seed)
        parts: dict[str, list[torch.Tensor]] = {}
        try:
            for start in range(0, len(data), self.batch_size):
                batch = data.batch(torch.arange(start, min(len(data), start + self.batch_size)))
                for key, value in self._score_batch(batch, gen).items():
                    parts.setdefault(key, []).append(value.cpu())
        finally:
            self.model.train(was_training)
        return {key: torch.cat(v).double().numpy() for key, v in parts.items()}

    def _score_batch(self, batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        model = self.model
        names = [m for m in model.names if m in batch.data]
        mu, logvar, present = model.encode_unimodal(batch)
        q = model.fuse(mu, logvar, present)
        eps = torch.randn((self.n_samples, *q.mu.shape), generator=gen).to(q.mu)
        z = q.mu + eps * q.std
        rec = torch.stack([torch.where(batch.present(m), decoded_log_likelihood(model, m, z, mu, logvar, present, batch),
                                       0.0) for m in names]).sum(0).mean(0)
        if callable(getattr(model, "prior_log_prob", None)):
            kl = (q.log_prob(z) - prior_log_prob(model, z)).mean(0)
        else:
            kl = q.kl_standard()
        out = {"neg_elbo": -(rec - kl)}
        nan = torch.tensor(float("nan"), device=z.device)
        for m in names:
            ll = decoded_log_likelihood(model, m, q.mu.unsqueeze(0), mu, logvar, present, batch)[0]
            out[f"nll_{m}"] = torch.where(batch.present(m), -ll, nan)
        if len(names) < 2:
            return out
        idx = {m: model.names.index(m) for m in names}
        for m in names:
            others = present.clone()
            others[idx[m]] = False
            q_other = model.fuse(mu, logvar, others)
            ll = decoded_log_likelihood(model, m, q_other.mu.unsqueeze(0), mu, logvar, others, batch)[0]
            ok = batch.present(m) & others.any(0)
            out[f"cross_nll_{m}"] = torch.where(ok, -ll, nan)
        total = torch.zeros_like(out["neg_elbo"])
        pairs = torch.zeros_like(total)
        for a, b in combinations(idx.values(), 2):
            both = (present[a] & present[b]).to(total.dtype)
            total += both * symmetric_kl(mu[a], logvar[a], mu[b], logvar[b])
            pairs += both
        out["disagreement"] = total / pairs.clamp_min(1.0)
        return out

    def fit(self, normal_data, contamination: float | None = None, fpr: float | None = None,
            score_name: str | None = None) -> AnomalyDetector:
        """Choose the threshold on `score_name` from data: with `fpr`, `normal_data` is clean
        held-out data and about that fraction of it is flagged; with `contamination`
        (default 0.05), that fraction of `normal_data` is assumed anomalous."""
        if score_name is not None:
            self.score_name = score_name
        return self.fit_scores(self.score(normal_data), contamination, fpr)

    def fit_scores(self, scores: dict[str, np.ndarray], contamination: float | None = None,
                   fpr: float | None = None) -> AnomalyDetector:
        """fit() on scores already computed by score()."""
        if contamination is not None and fpr is not None:
            raise InputError("give contamination or fpr, not both")
        s = self._chosen(scores)
        s = s[np.isfinite(s)]
        if len(s) == 0:
            raise InputError(f"score {self.score_name!r} does not apply to any example of the fitting data")
        if fpr is not None:
            self.threshold = threshold_from_validation(s, fpr)
        else:
            self.threshold = threshold_from_contamination(s, 0.05 if contamination is None else contamination)
        return self

    def _chosen(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        if self.score_name not in scores:
            raise InputError(f"unknown score {self.score_name!r}; this model gives {sorted(scores)}")
        return scores[self.score_name]

    def decision_function(self, data) -> np.ndarray:
        """The chosen score for each example."""
        return self._chosen(self.score(data))

    def predict(self, data=None, scores: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Bool [N]: chosen score above the fitted threshold (NaN scores are not flagged).
        Pass `data`, or `scores` from score() to avoid computing them twice."""
        if self.threshold is None:
            raise InputError("the detector has no threshold yet: call fit(normal_data) first")
        if scores is None:
            if data is None:
                raise InputError("predict needs data or scores")
            scores = self.score(data)
        s = self._chosen(scores)
        return np.nan_to_num(s, nan=-np.inf) > self.threshold


# -- benchmark anomalies ------------------------------------------------------------------------
def _label_keys(raw: RawData) -> np.ndarray | None:
    varied = [t for t, v in raw.targets.items() if len(np.unique(v)) > 1]
    if not varied:
        return None
    rows = np.stack([np.asarray(raw.targets[t]) for t in varied], axis=1)
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def _pick(n_eligible: int, fraction: float) -> int:
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"fraction: expected a value in (0, 1], received {fraction!r}")
    return max(1, round(fraction * n_eligible))


def mismatched_pairs(raw: RawData, modality: str, fraction: float = 0.1, seed: int = 0) -> tuple[RawData, np.ndarray]:
    """Replace `modality` in a `fraction` of examples by another example's value, so the pair no
    longer matches (with targets, the donor differs in at least one varying target).

    Returns the new RawData (targets still describe the untouched modalities) and is_anomaly [N]."""
    if modality not in raw.modalities:
        raise InputError(f"the data has no modality {modality!r}; it has {raw.names}")
    if len(raw.names) < 2:
        raise InputError("mismatched pairs need at least two modalities")
    rng = np.random.default_rng(seed)
    has = raw.mask[modality]
    others = np.zeros(len(raw), dtype=bool)
    for name in raw.names:
        if name != modality:
            others |= raw.mask[name]
    eligible = np.nonzero(has & others)[0]
    donors = np.nonzero(has)[0]
    if len(eligible) == 0 or len(donors) < 2:
        raise InputError(f"too few examples with {modality!r} and another modality present")
    chosen = rng.choice(eligible, size=min(len(eligible), _pick(len(eligible), fraction)), replace=False)
    keys = _label_keys(raw)
    source = np.empty(len(chosen), dtype=np.int64)
    for pos, i in enumerate(chosen):
        pool = donors[keys[donors] != keys[i]] if keys is not None else donors[donors != i]
        if len(pool) == 0:
            raise InputError(f"no example differs from example {i} in its targets; cannot build a mismatch")
        source[pos] = pool[rng.integers(len(pool))]
    values = raw.modalities[modality]
    new = values.copy() if isinstance(values, np.ndarray) else list(values)
    for i, j in zip(chosen, source):
        new[i] = values[j]
    is_anomaly = np.zeros(len(raw), dtype=bool)
    is_anomaly[chosen] = True
    out = RawData({**raw.modalities, modality: new}, dict(raw.kinds), {k: m.copy() for k, m in raw.mask.items()},
                  dict(raw.targets), dict(raw.info))
    return out, is_anomaly


def corrupted(raw: RawData, modality: str, fraction: float = 0.1, seed: int = 0) -> tuple[RawData, np.ndarray] | None:
    """Corrupt `modality`'s values in a `fraction` of the examples where it is present, as its kind
    corrupts them (`Modality.corrupt`: pictures get pixel noise or an occluding block). Returns the
    new RawData and is_anomaly [N]; None when the kind defines no corruption."""
    from omnivae.data.raw import kind_class

    if modality not in raw.modalities:
        raise InputError(f"corrupted: the data has no modality {modality!r}; it has {list(raw.modalities)}")
    rng = np.random.default_rng(seed)
    eligible = np.nonzero(raw.mask[modality])[0]
    if len(eligible) == 0:
        raise InputError(f"no example has modality {modality!r} present")
    chosen = np.sort(rng.choice(eligible, size=min(len(eligible), _pick(len(eligible), fraction)), replace=False))
    values = kind_class(raw.kinds[modality]).corrupt(raw.modalities[modality], chosen, rng)
    if values is None:
        return None
    is_anomaly = np.zeros(len(raw), dtype=bool)
    is_anomaly[chosen] = True
    out = RawData({**raw.modalities, modality: values}, dict(raw.kinds), {k: m.copy() for k, m in raw.mask.items()},
                  dict(raw.targets), dict(raw.info))
    return out, is_anomaly
