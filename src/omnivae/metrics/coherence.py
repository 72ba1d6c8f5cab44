"""Cross-modal coherence (Shi et al. 2019; Sutter et al. 2021): generate one modality from
others and check, with a scorer per modality, that the generated data shows the same
attributes (digit, shape, colour ...) as the example it came from.

A scorer maps model-space tensors [N,...] of one modality to {target: LongTensor [N]}
(-1 where the attribute cannot be read): a trained classifier for images and vectors,
a caption parser for text, identity for a categorical modality holding the target.
"""
from __future__ import annotations

from importlib import import_module
from itertools import combinations
from typing import Callable

import numpy as np
import torch

from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData

Scorer = Callable[[torch.Tensor], dict[str, torch.Tensor]]

CAPTION_PARSERS = {  # data source -> "module:function(text, **info) -> {target: int | None}"
    "shapes": "omnivae.data.shapes:parse_caption",
    "mnist": "omnivae.data.mnist:parse_digit_caption",
}


def varied_targets(raw: RawData) -> list[str]:
    return [t for t, v in raw.targets.items() if len(np.unique(v)) > 1]


def caption_scorer(model, name: str, raw: RawData) -> Scorer | None:
    spec = CAPTION_PARSERS.get(raw.info.get("source", ""))
    if spec is None:
        return None
    module, func = spec.split(":")
    parse = getattr(import_module(module), func)
    level = raw.info.get("level")
    targets = varied_targets(raw)

    def score(x: torch.Tensor) -> dict[str, torch.Tensor]:
        parsed = [parse(t, level) if level else parse(t) for t in model.modalities[name].to_output(x)]
        if not isinstance(parsed[0], dict):  # single-target parsers return an int
            parsed = [{targets[0]: p} for p in parsed]
        return {t: torch.tensor([-1 if p.get(t) is None else p[t] for p in parsed]) for t in targets}

    return score


def classifier_scorer(x: torch.Tensor, raw: RawData, kind: str, epochs: int, seed: int) -> Scorer:
    from omnivae.metrics.classifier import predict, train_classifier

    clfs = {}
    for t in varied_targets(raw):
        y = torch.as_tensor(raw.targets[t])
        known = y >= 0  # -1: label missing for that example
        clfs[t] = train_classifier(x[known], y[known], kind=kind, num_classes=int(y.max()) + 1,
                                   epochs=epochs, seed=seed)
    def score(gen: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t: predict(c, gen.float()) for t, c in clfs.items()}

    score.classifiers = clfs  # evaluation's Frechet distance reuses their features
    return score


def build_scorers(model, train: RawData, epochs: int = 3, seed: int = 0, max_examples: int = 20000) -> dict[str, Scorer]:
    """One scorer per modality that can be scored, trained/fitted on training data."""
    raw = train.subset(np.arange(min(len(train), max_examples)))
    data = TensorData.from_raw(model, raw)
    scorers: dict[str, Scorer] = {}
    for name in model.names:
        kind = model.modalities[name].kind
        present = raw.mask[name]
        if kind == "text":
            s = caption_scorer(model, name, raw)
        elif kind in ("image", "vector"):
            sub = raw.subset(np.nonzero(present)[0])
            x = model.modalities[name].features(data.data[name][torch.from_numpy(present)])
            s = classifier_scorer(x, sub, kind, epochs, seed)
        elif kind == "categorical":
            values = np.asarray(raw.modalities[name])[present]
            same = [t for t in varied_targets(raw) if np.array_equal(values, raw.targets[t][present])]
            s = (lambda x, same=same: {t: x for t in same}) if same else None
        else:
            s = None
        if s is not None:
            scorers[name] = s
    return scorers


def accuracy(pred: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> dict[str, float]:
    keys = [t for t in pred if t in truth]
    if not keys:
        return {}
    hits = {t: (pred[t] == truth[t]) for t in keys}
    known = {t: truth[t] >= 0 for t in keys}  # -1: true label missing, not scored
    out = {t: float(hits[t][known[t]].float().mean()) for t in keys}
    every = torch.stack(list(known.values())).all(0)
    out["all"] = float(torch.stack(list(hits.values())).all(0)[every].float().mean())
    return out


def conditional_coherence(model, data: TensorData, scorers: dict[str, Scorer], max_given: int | None = None,
                          n_max: int = 1000, batch_size: int = 500, **gen_options) -> dict[str, dict[str, float]]:
    """Accuracy of every target modality generated from every subset of the others
    (subsets up to `max_given` modalities), keyed "source+source->target"."""
    n = min(len(data), n_max)
    truth = {t: v[:n] for t, v in data.targets.items()}
    results = {}
    for target, score in scorers.items():
        others = [m for m in model.names if m != target]
        for size in range(1, min(len(others), max_given or len(others)) + 1):
            for given in combinations(others, size):
                preds = []
                for i in range(0, n, batch_size):
                    batch = data.batch(torch.arange(i, min(n, i + batch_size)))
                    gen = model.generate(batch, given=list(given), targets=[target], mean=True, raw=True, **gen_options)
                    preds.append(score(gen[target]))
                pred = {t: torch.cat([p[t] for p in preds]) for t in preds[0]}
                results[f"{'+'.join(given)}->{target}"] = accuracy(pred, truth)
    return results


def joint_coherence(model, scorers: dict[str, Scorer], n: int = 1000, **gen_options) -> dict[str, float]:
    """Fraction of prior samples whose modalities agree on every shared attribute."""
    if len(scorers) < 2:
        return {}
    samples = model.sample(n, targets=list(scorers), raw=True, **gen_options)
    preds = {m: s(samples[m]) for m, s in scorers.items()}
    out = {}
    names = list(preds)
    agree_all = torch.ones(n, dtype=torch.bool)
    for a, b in combinations(names, 2):
        shared = [t for t in preds[a] if t in preds[b]]
        if not shared:
            continue
        agree = torch.stack([(preds[a][t] == preds[b][t]) & (preds[a][t] >= 0) for t in shared]).all(0)
        out[f"{a}~{b}"] = float(agree.float().mean())
        agree_all &= agree
    out["all"] = float(agree_all.float().mean())
    return out
