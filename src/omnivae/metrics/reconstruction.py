"""Reconstruction error on held-out data: mean squared error (and PSNR for images) of the decoded
posterior mean against the input, from all modalities together and from each other one alone.

Which modalities are measured, and how, is the modality's to say (`Modality.squared_errors`):
pictures get the MSE of pixels in [0, 1] and PSNR = 10 log10(1 / MSE) in dB; numeric kinds
(vectors, signals) get the MSE in the data's own units and in the standardised units the encoder
reads (`mse_standardized`, 1.0 = as good as predicting the training mean). Labels and captions
are not measured here (coherence scores them). The MSE pools every value of
every scored example (the PSNR is that of the pooled MSE, not a mean of per-image PSNRs); a kind
may score fewer values (`Modality.scored_count`: audio counts the frames inside each clip)."""
from __future__ import annotations

import math

import torch

from omnivae.data.tensors import TensorData
from omnivae.errors import InputError


@torch.no_grad()
def reconstruction_metrics(model, data: TensorData, n_max: int = 1000, batch_size: int = 1000) -> dict:
    """{target: {"mse", "psnr_db" (pictures) or "mse_standardized" (numbers), "n", "from": {source:
    the same from that modality alone}}} over the first n_max examples where the target is present.
    Reconstructions decode the posterior mean (model.generate(mean=True)); "from" lists each other
    modality of the data on the examples where both are present (left out when there is none). A
    source the model cannot generate from (e.g. a cvae's target) is left out."""
    names = [m for m in model.names if m in data.data]
    n = min(len(data), n_max)
    head = data.batch(torch.arange(n))
    out = {}
    for target in names:
        if not model.modalities[target].measures_reconstruction:
            continue
        rows = head.present(target)
        scores = _scores(model, data, target, None, rows, batch_size)
        if scores is None:
            continue
        sources = {}
        for source in (m for m in names if m != target):
            found = _scores(model, data, target, source, rows & head.present(source), batch_size)
            if found is not None:
                sources[source] = found
        if sources:
            scores["from"] = sources
        out[target] = scores
    return out


def _scores(model, data: TensorData, target: str, source: str | None, rows: torch.Tensor,
            batch_size: int) -> dict | None:
    """Errors of `target` decoded from `source` (None: every modality of the batch) on `rows`."""
    index = rows.nonzero().flatten()
    if not len(index):
        return None
    modality = model.modalities[target]
    sums: dict[str, float] = {}
    count = 0
    for i in range(0, len(index), batch_size):
        batch = data.batch(index[i:i + batch_size])
        given = None if source is None else [source]
        try:
            gen = model.generate(batch, given=given, targets=[target], mean=True, raw=True)[target]
        except InputError:
            return None
        truth = batch.data[target]
        errors = modality.squared_errors(gen.reshape(truth.shape), truth)
        for key, value in errors.items():
            sums[key] = sums.get(key, 0.0) + value
        count += modality.scored_count(truth)
    out = modality.error_summary({key: value / count for key, value in sums.items()})
    return {**out, "n": len(index)}


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(peak^2 / mse); inf for a perfect reconstruction."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
