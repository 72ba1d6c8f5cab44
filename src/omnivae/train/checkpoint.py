"""Crash-safe checkpoints: each file carries a SHA-256 trailer and is written to a temporary
file, flushed to disk and renamed, so a killed run never leaves a half-written checkpoint."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from omnivae.errors import ModelFileError

MAGIC = b"OMNICKPT1"


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write to path.tmp-PID, fsync, then os.replace: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def write_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, payload + hashlib.sha256(payload).digest() + MAGIC)


def read_checkpoint(path: str | Path, map_location=None) -> dict[str, Any]:
    """Verify the trailer, then load with torch's weights-only unpickler (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = path.read_bytes()
    if len(blob) < 32 + len(MAGIC) or not blob.endswith(MAGIC):
        raise ModelFileError(f"checkpoint {path} is truncated or not an omnivae checkpoint "
                             f"({len(blob)} bytes, no integrity trailer)")
    payload, digest = blob[: -32 - len(MAGIC)], blob[-32 - len(MAGIC): -len(MAGIC)]
    if hashlib.sha256(payload).digest() != digest:
        raise ModelFileError(f"checkpoint {path} fails its SHA-256 check: the file is damaged")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO using write_checkpoint / read_checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        write_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return read_checkpoint(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
