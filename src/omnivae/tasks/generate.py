"""Cross-modal generation from user inputs given on the command line or from files."""
from __future__ import annotations

import json
import secrets
import warnings
from contextlib import contextmanager
from numbers import Integral
from pathlib import Path

import torch

from omnivae.atomic import write_text
from omnivae.errors import InputError
from omnivae.io import load_model

MAX_SAMPLES = 10_000  # samples per input and call: more is almost surely a typo (1e9 images would need ~64 GB)


class UnknownWordsWarning(UserWarning):
    """A caption holds words the model's tokenizer never saw in training (they become <unk>,
    and the generation ignores them)."""


def check_sample_count(n, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= MAX_SAMPLES:
        raise InputError(f"{name} must be a whole number from 1 to {MAX_SAMPLES:,} samples per input, got {n!r} "
                         "(call again for more)")


def warn_unknown_words(model, source: str, values) -> list[str]:
    """Warn (UnknownWordsWarning) when text inputs hold words the model never saw."""
    words = model.modalities[source].unknown_words(values)
    if words:
        warnings.warn(f"unknown words in the {source!r} input, ignored by the model (not in its training "
                      f"vocabulary): {', '.join(repr(w) for w in words)}", UnknownWordsWarning, stacklevel=3)
    return words


def parse_inputs(model, source: str, values: list[str]):
    """Command-line strings for modality `source` -> what the model accepts (the modality reads them)."""
    model.check_names([source], "--from")
    return model.modalities[source].read_cli(list(values))


@contextmanager
def seeded(seed: int):
    """Torch's CPU generator seeded inside the block, restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def new_seed() -> int:
    return secrets.randbits(31)


@torch.no_grad()
def draws(model, values: dict, targets=None, n: int = 1, seed: int | None = None, temperature: float | None = None,
          sampler: str = "auto", **options) -> tuple[dict[str, list], int]:
    """Generate `targets` from the inputs `values` ({modality: values}; empty: joint samples from
    the prior). Returns ({target: one entry per input, each the n outputs for it}, seed).

    temperature None samples (from a fitted conditional prior at its configured temperature), 0
    decodes the posterior mean, other values scale a fitted conditional prior's noise (1: its
    fitted law; without a conditional prior only 0 and 1 are allowed, and 1 samples). The same
    seed gives the same outputs."""
    check_sample_count(n)
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature < float("inf")):
        raise InputError(f"temperature must be a number >= 0, got {temperature!r}")
    seed = new_seed() if seed is None else seed
    conditional = model.uses_conditional_prior(sampler)
    if temperature not in (None, 0.0, 1.0) and not conditional:
        raise InputError("temperature other than 0 or 1 needs a model with a fitted conditional prior "
                         "(sampler 'auto' or 'conditional')")
    given = list(values)
    targets = model.check_names(targets, "targets") if targets else \
        ([x for x in model.names if x not in given] or list(model.names))
    if temperature is not None and conditional:
        options["latent_temperature"] = temperature
    with seeded(seed):
        if not given:
            if temperature == 0.0 and not conditional:
                raise InputError("temperature 0 needs inputs (or a model with a conditional prior)")
            out = model.sample(n, targets=targets, sampler=sampler, **options)
            return {k: [v] for k, v in out.items()}, seed
        out = model.generate(values, given=given, targets=targets, n=n, mean=temperature == 0.0,
                             sampler=sampler, **options)
    b = len(next(iter(values.values())))
    per_input = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            v = v.unsqueeze(0) if n == 1 else v  # [n, B, ...]
            per_input[k] = [v[:, i] for i in range(b)]
        else:
            v = [v] if n == 1 else v  # n lists of B values
            per_input[k] = [[v[j][i] for j in range(n)] for i in range(b)]
    return per_input, seed


def generate_from_inputs(model_dir, source: str | None, values: list[str], targets, n: int, out: Path,
                         seed: int | None = None, temperature: float | None = None, **options) -> dict:
    """Generate and write the outputs under `out`: images as one PNG per sample (and a grid per
    input), vectors and signals as .npy files, text and labels as JSON values; everything is listed
    in out/outputs.json. source None (and no values): joint samples from the prior.
    n (samples per input) is 1 to MAX_SAMPLES; caption words the model never saw raise an
    UnknownWordsWarning."""
    check_sample_count(n)
    model = load_model(model_dir) if not hasattr(model_dir, "modalities") else model_dir
    if source is None:
        if values:
            raise InputError(f"inputs {values[:3]} need --from MODALITY (one of {model.names})")
        inputs = {}
    else:
        inputs = {source: parse_inputs(model, source, values)}
        warn_unknown_words(model, source, inputs[source])
    result, seed = draws(model, inputs, targets, n, seed, temperature, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {name: [model.modalities[name].write_items(items, out, f"{name}_{i:03d}")
                      for i, items in enumerate(per_input)] for name, per_input in result.items()}
    if temperature is None:  # record what was used: the conditional prior's configured default, or plain sampling
        conditional = model.uses_conditional_prior(options.get("sampler", "auto"))
        temperature = model.conditional_prior.config.temperature if conditional else 1.0
    summary = {"from": source, "inputs": list(values), "n": n, "seed": seed, "temperature": temperature,
               "outputs": written}
    write_text(out / "outputs.json", json.dumps(summary, indent=2, allow_nan=False))
    return summary
