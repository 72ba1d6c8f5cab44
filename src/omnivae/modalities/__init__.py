"""Modality kinds by name. Register a custom kind with `register_modality`."""
from __future__ import annotations

from typing import Any

import numpy as np

from omnivae.errors import ConfigError, did_you_mean
from omnivae.modalities.audio import AudioModality, AudioSpec
from omnivae.modalities.base import Modality, ModalitySpec
from omnivae.modalities.categorical import CategoricalModality, CategoricalSpec
from omnivae.modalities.image import ImageModality, ImageSpec
from omnivae.modalities.signal import SignalModality, SignalSpec
from omnivae.modalities.vector import VectorModality, VectorSpec

MODALITY_KINDS: dict[str, type[Modality]] = {}


def register_modality(cls: type[Modality]) -> type[Modality]:
    """Make a Modality subclass available to configs under `cls.kind`."""
    MODALITY_KINDS[cls.kind] = cls
    return cls


# the kind that reads class labels: a data column given class names, or kept as evaluation labels
# only ("target"), is read as this kind reads its values
LABEL_KIND = CategoricalModality.kind

for _cls in (ImageModality, CategoricalModality, VectorModality, SignalModality, AudioModality):
    register_modality(_cls)

try:  # the text modality lives in its own sub-package
    from omnivae.modalities.text import TextModality, TextSpec  # noqa: F401

    register_modality(TextModality)
except ImportError:  # pragma: no cover - only while the package is being assembled
    pass

BUILT_IN_KINDS = tuple(MODALITY_KINDS)


def claiming_kinds() -> tuple[str, ...]:
    """The order in which readers ask kinds to claim unlabelled data (claims_array, claims_values,
    claims_arrow, claims_files): kinds registered by users first (they are more specific than the
    generic built-in ones), then the built-in kinds in their order (labels before numbers and text)."""
    return (*(k for k in MODALITY_KINDS if k not in BUILT_IN_KINDS), *BUILT_IN_KINDS)


def parse_spec(name: str, spec: Any) -> ModalitySpec:
    """A dict (from JSON/YAML) or a spec object -> the spec class of its kind."""
    if isinstance(spec, ModalitySpec):
        return spec
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ConfigError(f"modality {name!r}: needs a mapping with a 'kind' key, got {spec!r}")
    kind = spec["kind"]
    if not isinstance(kind, str) or kind not in MODALITY_KINDS:
        raise ConfigError(f"modality {name!r}: unknown kind {kind!r}{did_you_mean(kind, MODALITY_KINDS)}; "
                          f"known kinds: {sorted(MODALITY_KINDS)}")
    return MODALITY_KINDS[kind].spec_class.from_dict(spec, where=f"modality {name!r}")


def build_modality(name: str, spec: ModalitySpec, latent_dim: int) -> Modality:
    return MODALITY_KINDS[spec.kind](name, spec, latent_dim)


def infer_spec(name: str, kind: str, values: Any, mask: np.ndarray, overrides: dict | None = None,
               class_names: list[str] | None = None) -> ModalitySpec:
    """Guess a spec from training data (the kind's `infer_spec`: shape, number of classes,
    dimension), then apply overrides. An unknown kind is left for parse_spec to refuse."""
    spec: dict[str, Any] = {"kind": kind}
    cls = MODALITY_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is not None:
        spec.update(cls.infer_spec(values, mask, class_names))
    spec.update(overrides or {})
    return parse_spec(name, spec)


def figure_roles(modalities: dict[str, Modality]) -> tuple[list[str], list[str]]:
    """(names whose kinds draw pictures, names whose kinds draw one short text per value), in
    order, from what each kind's `drawn` gives for a placeholder value; the rest are not drawn.
    Figures lay pictures out as tiles and texts as titles or captions, whatever the kinds are."""
    pictures, texts = [], []
    for name, modality in modalities.items():
        out = modality.drawn(modality.placeholder(1))
        if out is not None:
            (texts if isinstance(out, list) else pictures).append(name)
    return pictures, texts


__all__ = ["MODALITY_KINDS", "LABEL_KIND", "claiming_kinds", "figure_roles", "Modality", "ModalitySpec", "register_modality", "parse_spec",
           "build_modality", "infer_spec", "ImageSpec", "CategoricalSpec", "VectorSpec", "SignalSpec", "AudioSpec"]
