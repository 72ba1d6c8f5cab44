"""Images in and out of files and JSON: what the image modality reads from a command line or a
request body, and writes for a user. Pillow only; no code runs on load."""
from __future__ import annotations

import base64
import binascii
import io
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from omnivae.errors import InputError

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, TypeError)


def _fit(img: Image.Image, shape) -> np.ndarray:
    """A PIL image -> uint8 [C,H,W] of the model's shape (converted and resized)."""
    img = img.convert("RGB" if shape[0] == 3 else "L").resize((shape[2], shape[1]))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_image_file(path: str | Path, shape) -> np.ndarray:
    """An image file as uint8 [C,H,W] matching the model's shape."""
    try:
        with Image.open(path) as img:
            return _fit(img, shape)
    except FileNotFoundError:
        raise InputError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError as exc:  # a tiny file that claims billions of pixels
        raise InputError(f"image file {path} is refused: {exc}") from None
    except READ_ERRORS as exc:
        raise InputError(f"image file {path} cannot be read as an image: {exc}") from None


def decode_data_url(value, shape, max_side: int, where: str) -> np.ndarray:
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
            return _fit(img, shape)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: refused: {exc}") from None
    except READ_ERRORS:
        raise InputError(f"{where}: cannot be read as a PNG, JPEG, WebP, GIF or BMP image") from None


def to_pil(x) -> Image.Image:
    """An image [C,H,W] (uint8, or floats in [0, 1]) -> a PIL image (grayscale or RGB)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype != np.uint8:
        a = np.round(np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
    a = a[0] if a.shape[0] != 3 else a.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(a))


def png_bytes(x) -> bytes:
    buf = io.BytesIO()
    to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(x) -> str:
    """An image [C,H,W] -> a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(x)).decode("ascii")
