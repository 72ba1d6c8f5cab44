"""What goes over the wire: request models (validated by FastAPI, shown in /openapi.json),
and the conversion of JSON values to model inputs and of model outputs to JSON.

Values per modality kind: text as strings; images as base64 PNG/JPEG data URLs (or raw
base64) in requests and PNG data URLs in responses; categorical labels as integers or class
names; vectors as lists of numbers.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from omnivae.errors import InputError

Inputs = dict[str, list[Any]]
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def seed_field():
    return Field(None, ge=0, le=2**63 - 1, description="Random seed; the same seed gives the same output.")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(Request):
    inputs: Inputs = Field(default_factory=dict, description="{modality: [values]}; empty: joint samples from the prior.")
    targets: list[str] | None = Field(None, description="Modalities to generate (default: all not given).")
    n: int = Field(1, ge=1, description="Draws per input.")
    seed: int | None = seed_field()
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False,
                               description="Scales the sampling noise; 0 decodes the posterior mean.")
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


class TraverseRequest(Request):
    dim: int = Field(..., ge=0, description="Latent dimension to vary.")
    low: float = Field(-3.0, allow_inf_nan=False)
    high: float = Field(3.0, allow_inf_nan=False)
    steps: int = Field(7, ge=2)
    inputs: Inputs | None = Field(None, description="One input to start from (default: the prior mean, zero).")
    target: str | None = None


# -- JSON values -> model inputs -----------------------------------------------------------------
def decode_image(value: Any, shape, max_side: int, where: str) -> np.ndarray:
    """A base64 (data URL) image -> uint8 [C,H,W] of the model's shape."""
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a base64 PNG/JPEG data URL, got {type(value).__name__}")
    if shape[0] not in (1, 3):
        raise InputError(f"{where}: images with {shape[0]} channels cannot be read from PNG/JPEG")
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InputError(f"{where}: a data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: not valid base64") from None
    if not data:
        raise InputError(f"{where}: the image is empty")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            if max(img.size) > max_side:
                raise InputError(f"{where}: the image is {img.size[0]}x{img.size[1]} pixels; "
                                 f"the largest side allowed is {max_side}")
            img = img.convert("RGB" if shape[0] == 3 else "L").resize((shape[2], shape[1]))
            arr = np.asarray(img, dtype=np.uint8)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: refused: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, TypeError):
        raise InputError(f"{where}: cannot be read as a PNG, JPEG, WebP, GIF or BMP image") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def numbers(value: Any, where: str) -> np.ndarray:
    """A (nested) list of finite numbers -> float32 array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{where}: expected a list of numbers") from None
    if arr.ndim == 0 or arr.size == 0:
        raise InputError(f"{where}: expected a non-empty list of numbers")
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: holds NaN or infinite values")
    return arr.astype(np.float32)


def model_values(model, name: str, values: list, limits) -> Any:
    """JSON values of modality `name` -> what model.as_batch accepts."""
    model.check_names([name], "inputs")
    mod = model.modalities[name]
    if not values:
        raise InputError(f"inputs[{name!r}] is empty: give at least one value")
    if len(values) > limits.max_batch:
        raise InputError(f"inputs[{name!r}] holds {len(values)} values; at most {limits.max_batch} per request")
    where = [f"inputs[{name!r}][{i}]" for i in range(len(values))]
    if mod.kind == "text":
        for w, v in zip(where, values):
            if not isinstance(v, str):
                raise InputError(f"{w}: modality {name!r} is text: expected a string, got {type(v).__name__}")
            if len(v) > limits.max_text_chars:
                raise InputError(f"{w}: {len(v)} characters; at most {limits.max_text_chars}")
        return list(values)
    if mod.kind == "image":
        return np.stack([decode_image(v, mod.spec.shape, limits.max_image_side, w) for w, v in zip(where, values)])
    if mod.kind == "categorical":
        for w, v in zip(where, values):
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise InputError(f"{w}: modality {name!r} is categorical: expected a class index or name")
        return list(values)
    return np.stack([numbers(v, w) for w, v in zip(where, values)])


def batch_inputs(model, inputs: dict, limits) -> dict:
    if not inputs:
        raise InputError("inputs is empty: give {modality: [values]}")
    return {name: model_values(model, name, values, limits) for name, values in inputs.items()}


# -- model outputs -> JSON values ---------------------------------------------------------------
def png_data_url(x) -> str:
    """An image [C,H,W] (uint8, or float in [0, 1]) -> a PNG data URL."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype != np.uint8:
        a = np.round(np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
    a = a[0] if a.shape[0] != 3 else a.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def json_number(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def json_value(kind: str, item) -> Any:
    """One output item of a modality of `kind` -> a JSON value (NaN becomes null)."""
    if kind == "image":
        return png_data_url(item)
    if isinstance(item, str) or item is None:
        return item
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    arr = np.asarray(item)
    if arr.dtype.kind in "iub":
        return arr.tolist()
    if arr.ndim == 0:
        return json_number(float(arr))
    return [json_value(kind, row) for row in arr] if arr.ndim > 1 else [json_number(float(v)) for v in arr]
