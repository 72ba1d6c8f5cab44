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
    "mnist": "omnivae.data.mnist:parse_mnist_caption",
}


def varied_targets(raw: RawData) -> list[str]:
    return [t for t, v in raw.targets.items() if len(np.unique(v)) > 1]


def caption_scorer(modality, raw: RawData) -> Scorer | None:
    spec = CAPTION_PARSERS.get(raw.info.get("source", ""))
    if spec is None:
        return None
    module, func = spec.split(":")
    parse = getattr(import_module(module), func)
    level = raw.info.get("level")
    targets = varied_targets(raw)

    def score(x: torch.Tensor) -> dict[str, torch.Tensor]:
        parsed = [parse(t, level) if level else parse(t) for t in modality.to_output(x)]
        if not isinstance(parsed[0], dict):  # single-target parsers return an int
            parsed = [{targets[0]: p} for p in parsed]
        return {t: torch.tensor([-1 if p.get(t) is None else p[t] for p in parsed]) for t in targets}

    return score


def classifier_scorer(x: torch.Tensor, raw: RawData, kind: str, epochs: int, seed: int,
                      augment: bool = False, cache_dir=None) -> Scorer | None:
    """One small classifier (of the metric's kind: "conv" for images, "mlp" for vectors) with a head
    per varied attribute of `raw` (a shared trunk: one network to train and run, not one per
    attribute), trained on features x; augment trains image classifiers on blurred copies too.
    With cache_dir, the trained network is kept there under a key that hashes its inputs, labels
    and settings, and reused when they are the same."""
    from omnivae.metrics.classifier import cached_classifier, predict, train_classifier, training_key

    y = {t: torch.as_tensor(raw.targets[t]).long() for t in varied_targets(raw)}  # -1: label missing
    if not y:
        return None

    def train():
        return train_classifier(x, y, kind=kind, epochs=epochs, seed=seed, augment=augment)

    key = training_key(x, y, kind=kind, epochs=epochs, seed=seed, augment=augment)
    clf = train() if cache_dir is None else cached_classifier(cache_dir, key, train)

    def score(gen: torch.Tensor) -> dict[str, torch.Tensor]:
        # real images arrive as uint8 pixels, generated ones as floats in [0, 1]: the classifier
        # was trained on the latter (the modality's features)
        return predict(clf, gen.float().div(255.0) if gen.dtype == torch.uint8 else gen.float())

    score.classifier = clf  # evaluation's Frechet distance reuses its features
    return score


def build_scorers(model, train: RawData, epochs: int = 3, seed: int = 0, max_examples: int = 20000,
                  cache_dir=None) -> dict[str, Scorer]:
    """One scorer per modality that can be scored, trained/fitted on training data (trained
    networks kept in, and reused from, `cache_dir` when given)."""
    raw = train.subset(np.arange(min(len(train), max_examples)))
    data = TensorData.from_raw(model, raw)
    scorers: dict[str, Scorer] = {}
    for name in model.names:
        present = raw.mask[name]
        rows = raw.subset(np.nonzero(present)[0])
        s = model.modalities[name].scorer(rows, data.data[name][torch.from_numpy(present)], epochs, seed,
                                          cache_dir=cache_dir)
        if s is not None:
            scorers[name] = s
    return scorers


def accuracy(pred: dict[str, torch.Tensor], truth: dict[str, torch.Tensor],
             required: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Per-attribute accuracy and "all" (every scored attribute right). `required` [N] bool per
    attribute says where it is scored: an attribute the inputs leave open (a caption that does
    not name the position), or that the output cannot express, counts neither way."""
    keys = [t for t in pred if t in truth]
    if not keys:
        return {}
    hits = {t: (pred[t] == truth[t]) for t in keys}
    known = {t: truth[t] >= 0 for t in keys}  # -1: true label missing, not scored
    if required is not None:
        known = {t: known[t] & required[t] if t in required else known[t] for t in keys}
    out = {t: float(hits[t][known[t]].float().mean()) if bool(known[t].any()) else float("nan") for t in keys}
    ok = torch.stack([hits[t] | ~known[t] for t in keys]).all(0)
    scored = torch.stack([known[t] for t in keys]).any(0)
    if required is None:  # every attribute must be known for the example to count, as before
        scored = torch.stack(list(known.values())).all(0)
    out["all"] = float(ok[scored].float().mean()) if bool(scored.any()) else float("nan")
    return out


def expressed_rates(score: Scorer, x: torch.Tensor) -> dict[str, float]:
    """How often real data of a modality shows each attribute in a readable way (1 for images
    and labels; for captions, how often they name it)."""
    return {t: float((v >= 0).float().mean()) for t, v in score(x).items()}


def required_attributes(given_preds: list[dict[str, torch.Tensor]], target_pred: dict[str, torch.Tensor],
                        rates: dict[str, float]) -> dict[str, torch.Tensor]:
    """Where each attribute is scored: some given modality determines it (a caption names it, an
    image shows it), and the target expresses it (always, or this generated output names it)."""
    out = {}
    for t, pred in target_pred.items():
        determined = torch.zeros_like(pred, dtype=torch.bool)
        for g in given_preds:
            if t in g:
                determined |= g[t] >= 0
        always = rates.get(t, 1.0) >= 0.99
        out[t] = determined & (torch.ones_like(determined) if always else pred >= 0)
    return out


def real_scores(data: TensorData, scorers: dict[str, Scorer], n_max: int = 1000) -> dict[str, dict[str, torch.Tensor]]:
    """What each scorer reads in the first n_max examples of `data` itself (the attributes the real
    inputs show): conditional_coherence's `readable`, to compute once for several calls."""
    head = data.batch(torch.arange(min(len(data), n_max)))
    return {m: scorers[m](head.data[m]) for m in scorers if m in head.data}


def conditional_coherence(model, data: TensorData, scorers: dict[str, Scorer], max_given: int | None = None,
                          n_max: int = 1000, batch_size: int = 1000, readable: dict | None = None,
                          keep: dict | None = None, **gen_options) -> dict[str, dict[str, float]]:
    """Accuracy of every target modality generated from every subset of the others
    (subsets up to `max_given` modalities), keyed "source+source->target". Only attributes the
    given modalities determine are scored (see required_attributes). gen_options go to
    model.generate (default: the posterior mean, mean=True).

    readable: real_scores(data, scorers, n_max), when already computed; keep: a dict that receives
    the generated model-space outputs [n, ...] under the same keys, for other metrics to reuse."""
    gen_options = {"mean": True, **gen_options}
    n = min(len(data), n_max)
    truth = {t: v[:n] for t, v in data.targets.items()}
    head = data.batch(torch.arange(n))
    if readable is None:
        readable = real_scores(data, scorers, n)
    rates = {m: {t: float((v[head.present(m)] >= 0).float().mean()) for t, v in p.items()}
             for m, p in readable.items()}
    results = {}
    for target, score in scorers.items():
        others = [m for m in model.names if m != target]
        for size in range(1, min(len(others), max_given or len(others)) + 1):
            for given in combinations(others, size):
                key, preds, outputs = f"{'+'.join(given)}->{target}", [], []
                for i in range(0, n, batch_size):
                    batch = data.batch(torch.arange(i, min(n, i + batch_size)))
                    gen = model.generate(batch, given=list(given), targets=[target], raw=True, **gen_options)
                    preds.append(score(gen[target]))
                    if keep is not None:
                        outputs.append(gen[target])
                pred = {t: torch.cat([p[t] for p in preds]) for t in preds[0]}
                if outputs and len({x.shape[1:] for x in outputs}) == 1:
                    keep[key] = torch.cat(outputs)
                given_preds = [readable[g] for g in given if g in readable] or [truth]
                required = required_attributes(given_preds, pred, rates.get(target, {}))
                results[key] = accuracy(pred, truth, required)
    return results


def joint_coherence(model, scorers: dict[str, Scorer], n: int = 1000, keep: dict | None = None,
                    **gen_options) -> dict[str, float]:
    """Fraction of prior samples whose modalities agree on every shared attribute. keep: a dict
    that receives the samples (model space, [n, ...]) under "prior->modality", for reuse."""
    if len(scorers) < 2:
        return {}
    samples = model.sample(n, targets=list(scorers), raw=True, **gen_options)
    if keep is not None:
        keep.update({f"prior->{m}": x for m, x in samples.items()})
    preds = {m: s(samples[m]) for m, s in scorers.items()}
    out = {}
    names = list(preds)
    agree_all = torch.ones(n, dtype=torch.bool)
    for a, b in combinations(names, 2):
        shared = [t for t in preds[a] if t in preds[b]]
        if not shared:
            continue
        # an attribute counts where both samples show it readably (a caption that leaves the
        # position unsaid neither agrees nor disagrees with the image's position); a pair with
        # no readable attribute in common does not agree
        readable = torch.stack([(preds[a][t] >= 0) & (preds[b][t] >= 0) for t in shared])
        equal = torch.stack([preds[a][t] == preds[b][t] for t in shared])
        agree = (equal | ~readable).all(0) & readable.any(0)
        out[f"{a}~{b}"] = float(agree.float().mean())
        agree_all &= agree
    out["all"] = float(agree_all.float().mean())
    return out
