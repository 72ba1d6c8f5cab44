"""Caption metrics: exact match, token accuracy, corpus BLEU and parsed-attribute accuracy."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from omnivae.errors import InputError


def normalise(text: str) -> str:
    """Lower case with runs of whitespace collapsed to one space."""
    return " ".join(text.lower().split())


def _check_strings(preds: Sequence[str], refs: Sequence[str] | None = None) -> None:
    for name, seq in (("preds", preds), ("refs", refs)):
        if seq is None:
            continue
        if isinstance(seq, str) or not all(isinstance(s, str) for s in seq):
            raise InputError(f"{name}: expected a list of strings, received {type(seq).__name__}")
        if len(seq) == 0:
            raise InputError(f"{name}: expected a non-empty list of strings, received length 0")
    if refs is not None and len(preds) != len(refs):
        raise InputError(f"refs: expected length {len(preds)} like preds, received {len(refs)}")


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after normalising case and whitespace."""
    _check_strings(preds, refs)
    return float(np.mean([normalise(p) == normalise(r) for p, r in zip(preds, refs)]))


def token_accuracy(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of reference tokens matched at the same position; missing tokens count as wrong."""
    _check_strings(preds, refs)
    correct = total = 0
    for p, r in zip(preds, refs):
        pt, rt = normalise(p).split(), normalise(r).split()
        correct += sum(a == b for a, b in zip(pt, rt))
        total += len(rt)
    if total == 0:
        raise InputError("refs: expected at least one reference token, received only empty strings")
    return correct / total


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (0..100) with one reference per prediction, via sacrebleu."""
    _check_strings(preds, refs)
    try:
        import sacrebleu
    except ImportError as exc:  # optional dependency
        raise ImportError("bleu needs sacrebleu: pip install 'omnivae[text-metrics]'") from exc
    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)]).score)


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
