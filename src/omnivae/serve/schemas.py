"""What goes over the wire: request models (validated by FastAPI, shown in /openapi.json),
and the checks around JSON inputs. Each modality reads its own JSON values (`read_json`) and
writes its outputs (`json_item`): text as strings; images as base64 PNG/JPEG data URLs (or raw
base64) in requests and PNG data URLs in responses; categorical labels as integers or class
names; vectors and signals as lists of numbers.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from omnivae.errors import InputError

Inputs = dict[str, list[Any]]


def seed_field():
    return Field(None, ge=0, le=2**63 - 1, description="Random seed; the same seed gives the same output.")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(Request):
    inputs: Inputs = Field(default_factory=dict, description="{modality: [values]}; empty: joint samples from the prior.")
    targets: list[str] | None = Field(None, description="Modalities to generate (default: all not given).")
    n: int = Field(1, ge=1, description="Draws per input.")
    seed: int | None = seed_field()
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False,
                                      description="Scales the sampling noise; 0 decodes the posterior mean; unset: "
                                                  "the model's default (a conditional prior's configured temperature).")
    sampler: Literal["auto", "posterior", "conditional"] = "auto"


class CaptionRequest(Request):
    image: str = Field(..., description="A base64 PNG/JPEG data URL or raw base64.")
    modality: str | None = Field(None, description="Image modality (default: the first).")
    target: str | None = Field(None, description="Text modality (default: the first).")
    mean: bool = Field(True, description="Decode the posterior mean (deterministic) instead of a draw.")
    seed: int | None = seed_field()


class EmbedRequest(Request):
    inputs: Inputs
    given: list[str] | None = Field(None, description="Modalities to encode from (default: all given).")


class RetrieveRequest(Request):
    query: Inputs
    gallery: str
    k: int = Field(5, ge=1)
    score: Literal["latent", "likelihood"] = "latent"


class AnomalyRequest(Request):
    inputs: Inputs
    seed: int = Field(0, ge=0, le=2**63 - 1)


class InterpolateRequest(Request):
    modality: str
    a: Any = Field(..., description="First input (one value of `modality`).")
    b: Any = Field(..., description="Second input.")
    target: str | None = Field(None, description="Modality to decode to (default: the first image modality).")
    steps: int = Field(8, ge=2)
    path: Literal["auto", "linear", "spherical"] = Field(
        "auto", description="How the codes are joined: spherical, linear, or auto (linear for deterministic "
                            "autoencoders, else spherical).")


class TraverseRequest(Request):
    dim: int = Field(..., ge=0, description="Latent dimension to vary.")
    low: float = Field(-3.0, allow_inf_nan=False)
    high: float = Field(3.0, allow_inf_nan=False)
    steps: int = Field(7, ge=2)
    inputs: Inputs | None = Field(None, description="One input to start from (default: the prior mean, zero).")
    target: str | None = None


# -- JSON values -> model inputs (each modality reads its own) ----------------------------------
def model_values(model, name: str, values: list, limits) -> Any:
    """JSON values of modality `name` -> what model.as_batch accepts."""
    model.check_names([name], "inputs")
    mod = model.modalities[name]
    if not values:
        raise InputError(f"inputs[{name!r}] is empty: give at least one value")
    if len(values) > limits.max_batch:
        raise InputError(f"inputs[{name!r}] holds {len(values)} values; at most {limits.max_batch} per request")
    where = [f"inputs[{name!r}][{i}]" for i in range(len(values))]
    return mod.read_json(list(values), where, limits)


def batch_inputs(model, inputs: dict, limits) -> dict:
    if not inputs:
        raise InputError("inputs is empty: give {modality: [values]}")
    return {name: model_values(model, name, values, limits) for name, values in inputs.items()}
