"""Caption metrics: exact match, token accuracy, corpus BLEU and parsed-attribute accuracy.

A reference is one string per prediction, or a list of strings (every caption of an image, e.g.
COCO's five): a prediction then scores against all of them. Exact match: equal to any one.
Token accuracy: the reference whose tokens it matches best (the highest share; ties to the
first). BLEU: multi-reference corpus BLEU (n-grams clipped by their most frequent count in any
one reference, brevity penalty from the closest reference length)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from omnivae.errors import InputError


def normalise(text: str) -> str:
    """Lower case with runs of whitespace collapsed to one space."""
    return " ".join(text.lower().split())


References = Sequence[str | Sequence[str]]  # per prediction: one reference, or all of them


def _check_strings(preds: Sequence[str], refs: References | None = None) -> list[list[str]] | None:
    """Validate; return the references as one non-empty list of strings per prediction."""
    for name, seq, item in (("preds", preds, str), ("refs", refs, (str, Sequence))):
        if seq is None:
            continue
        if isinstance(seq, str) or not all(isinstance(s, item) for s in seq):
            raise InputError(f"{name}: expected a list of strings, received {type(seq).__name__}")
        if len(seq) == 0:
            raise InputError(f"{name}: expected a non-empty list of strings, received length 0")
    if refs is None:
        return None
    if len(preds) != len(refs):
        raise InputError(f"refs: expected length {len(preds)} like preds, received {len(refs)}")
    lists = [[r] if isinstance(r, str) else r for r in refs]
    for i, r in enumerate(lists):
        if isinstance(r, (bytes, bytearray)) or not isinstance(r, Sequence) or not r \
                or not all(isinstance(s, str) for s in r):
            raise InputError(f"refs[{i}]: expected a string or a non-empty list of strings, received {r!r:.60}")
    return [list(r) for r in lists]


def exact_match(preds: Sequence[str], refs: References) -> float:
    """Fraction of predictions equal to one of their references after normalising case and whitespace."""
    lists = _check_strings(preds, refs)
    return float(np.mean([normalise(p) in {normalise(r) for r in rs} for p, rs in zip(preds, lists)]))


def token_accuracy(preds: Sequence[str], refs: References) -> float:
    """Share of reference tokens matched at the same position; missing tokens count as wrong.
    With several references, each prediction is counted against the one it matches best."""
    lists = _check_strings(preds, refs)
    correct = total = 0
    for p, rs in zip(preds, lists):
        pt = normalise(p).split()
        counts = [(sum(a == b for a, b in zip(pt, rt)), len(rt)) for rt in (normalise(r).split() for r in rs)]
        hit, size = max(counts, key=lambda c: c[0] / c[1] if c[1] else 0.0)
        correct += hit
        total += size
    if total == 0:
        raise InputError("refs: expected at least one reference token, received only empty strings")
    return correct / total


def bleu(preds: Sequence[str], refs: References) -> float:
    """Corpus BLEU (0..100) against every reference of each prediction, via sacrebleu."""
    lists = _check_strings(preds, refs)
    try:
        import sacrebleu
    except ImportError as exc:  # optional dependency
        raise ImportError("bleu needs sacrebleu: pip install 'omnivae[text-metrics]'") from exc
    width = max(len(rs) for rs in lists)
    streams = [[rs[k] if k < len(rs) else None for rs in lists] for k in range(width)]  # None: no k-th reference
    return float(sacrebleu.corpus_bleu(list(preds), streams).score)


def attribute_accuracy(
    preds: Sequence[str], true_attrs: dict[str, np.ndarray],
    parse_fn: Callable[[str], dict[str, int | None]],
) -> dict[str, float]:
    """Per-attribute accuracy of attributes parsed from captions, plus "all" (every one right)."""
    _check_strings(preds)
    if not isinstance(true_attrs, dict) or not true_attrs:
        raise InputError("true_attrs: expected a non-empty dict {attribute: array [N]}")
    n = len(preds)
    truth = {}
    for name, values in true_attrs.items():
        arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
        if arr.shape != (n,):
            raise InputError(f"true_attrs[{name!r}]: expected shape ({n},), received {arr.shape}")
        truth[name] = arr
    hits = np.zeros((n, len(truth)), dtype=bool)
    for i, text in enumerate(preds):
        parsed = parse_fn(text) or {}
        for j, (name, arr) in enumerate(truth.items()):
            value = parsed.get(name)
            hits[i, j] = value is not None and value == arr[i]
    result = {name: float(hits[:, j].mean()) for j, name in enumerate(truth)}
    result["all"] = float(hits.all(axis=1).mean())
    return result
