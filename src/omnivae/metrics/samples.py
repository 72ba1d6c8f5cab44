"""Sample quality beyond accuracy: do several draws from one input vary where the input leaves
things open (a caption that does not name the position), and are the images sharp?

- open_attribute_diversity: n draws per input, scored; for every attribute the given
  modalities leave open, how many distinct values the draws show (a model that decodes the
  average shows one, or none that a classifier can read); the named attributes' accuracy
  over all draws beside it.
- laplacian_sharpness: mean variance of the Laplacian of the grey-level image, a standard
  focus measure; blur lowers it. Reported as a ratio to real images of the same data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from omnivae.data.tensors import TensorData
from omnivae.errors import InputError
from omnivae.metrics.coherence import Scorer, accuracy, required_attributes


@torch.no_grad()
def open_attribute_diversity(model, data: TensorData, scorers: dict[str, Scorer], given: list[str], target: str,
                             n_samples: int = 20, n_inputs: int = 50, **gen_options) -> dict:
    """Distinct values of each open attribute among n_samples draws per input, and the
    accuracy of the determined attributes over every draw."""
    if target not in scorers:
        raise InputError(f"no scorer for target {target!r}; scorers: {sorted(scorers)}")
    if n_samples < 2:
        raise InputError(f"n_samples must be >= 2 to measure diversity, got {n_samples}")
    k = min(n_inputs, len(data))
    batch = data.batch(torch.arange(k))
    out = model.generate(batch, given=given, targets=[target], n=n_samples, raw=True, **gen_options)[target]
    flat = out.reshape(n_samples * k, *out.shape[2:])
    pred = {t: v.view(n_samples, k) for t, v in scorers[target](flat).items()}
    given_preds = [scorers[g](batch.data[g]) for g in given if g in scorers]
    truth = {t: v[:k] for t, v in data.targets.items() if t in pred}
    result: dict = {"n_samples": n_samples, "n_inputs": k, "open": {}}
    for t, p in pred.items():
        determined = torch.zeros(k, dtype=torch.bool)
        for g in given_preds:
            if t in g:
                determined |= g[t].cpu() >= 0
        open_rows = ~determined
        if not bool(open_rows.any()):
            continue
        distinct = torch.tensor([len(set(p[:, j][p[:, j] >= 0].tolist())) for j in range(k)])[open_rows].float()
        classes = int(data.targets[t].max()) + 1 if t in data.targets else None
        result["open"][t] = {"classes": classes, "inputs": int(open_rows.sum()),
                             "distinct_mean": float(distinct.mean()), "distinct_min": int(distinct.min()),
                             "share_at_least_3": float((distinct >= 3).float().mean())}
    rep_truth = {t: v.repeat(n_samples) for t, v in truth.items()}
    rep_pred = {t: v.reshape(-1) for t, v in pred.items()}
    rep_given = [{t: v.repeat(n_samples) for t, v in g.items()} for g in given_preds] or [rep_truth]
    required = required_attributes(rep_given, rep_pred, {})
    result["named_accuracy"] = accuracy(rep_pred, rep_truth, required)
    return result


def laplacian_sharpness(images: torch.Tensor) -> float:
    """Mean over images [N,C,H,W] (floats in [0,1] or uint8) of the variance of the Laplacian
    of their grey level."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise InputError(f"laplacian_sharpness: expected images [N,C,H,W], got "
                         f"{list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    grey = x.mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    lap = F.conv2d(grey, kernel.to(grey.device))
    return float(lap.flatten(1).var(1).mean())
