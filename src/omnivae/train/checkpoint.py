"""Crash-safe checkpoints: each file carries a SHA-256 trailer and is written atomically
(omnivae.atomic), so a killed run never leaves a half-written checkpoint.

Before last.ckpt is replaced, the current one (if it passes its check) is kept as
previous.ckpt; `resume_checkpoint` picks the newest good one of last, previous and best.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from omnivae.atomic import replacing
from omnivae.errors import ModelFileError
from omnivae.run_folder import LAST, PREVIOUS, RunFolder

MAGIC = b"OMNICKPT1"
TRAILER = 32 + len(MAGIC)


class CheckpointWarning(UserWarning):
    """Resuming from an older checkpoint because the newer ones are damaged or missing."""


def write_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()  # hashed and written without a copy (13 MB: 7 ms each copy)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)
        f.write(hashlib.sha256(payload).digest() + MAGIC)


def _check_blob(path: Path, size: int, magic: bytes, digest: bytes, actual: bytes) -> None:
    if size < TRAILER or magic != MAGIC:
        raise ModelFileError(f"checkpoint {path} is truncated or not an omnivae checkpoint "
                             f"({size} bytes, no integrity trailer)")
    if actual != digest:
        raise ModelFileError(f"checkpoint {path} fails its SHA-256 check: the file is damaged")


def verify_checkpoint(path: str | Path) -> None:
    """Raise ModelFileError unless the file is complete and passes its SHA-256 check
    (streams the file; nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = max(0, size - TRAILER)
        while left:
            chunk = f.read(min(left, 1 << 22))
            if not chunk:
                break
            sha.update(chunk)
            left -= len(chunk)
        trailer = f.read()
    _check_blob(path, size, trailer[32:], trailer[:32], sha.digest())


def read_checkpoint(path: str | Path, map_location=None) -> dict[str, Any]:
    """Verify the trailer, then load with torch's weights-only unpickler (no code runs):
    objects other than tensors and plain containers are refused with ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    blob = path.read_bytes()
    payload, digest, magic = blob[:-TRAILER], blob[-TRAILER:-len(MAGIC)], blob[-len(MAGIC):]
    _check_blob(path, len(blob), magic, digest, hashlib.sha256(payload).digest())
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for forbidden objects; RuntimeError for bad archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"checkpoint {path} passes its checksum but cannot be loaded safely "
                             f"(only tensors and plain containers are allowed): {first}") from None


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime in ns): a file replaced or changed since has another."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def keep_previous(path: Path, written: tuple | None = None) -> None:
    """Before `path` is replaced: if it is a good checkpoint, keep it as previous.ckpt
    (a hard link, or a copy where links are not possible). A damaged one is not kept.
    `written`: the file_identity of the file as this process wrote it; a file still the same
    is not read back to check it."""
    try:
        if written is None or file_identity(path) != written:
            verify_checkpoint(path)
    except (ModelFileError, OSError):
        return
    with replacing(path.with_name(PREVIOUS)) as tmp:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: last.ckpt if it passes its check, else previous.ckpt,
    else the newest best*.ckpt, with a CheckpointWarning naming what was skipped and why.
    None if the run has no checkpoint at all; ModelFileError if none of them is good."""
    problems = []
    for path in RunFolder(run_dir).resume_candidates():
        try:
            verify_checkpoint(path)
        except ModelFileError as exc:
            problems.append(str(exc))
            continue
        if problems:
            warnings.warn(f"resuming from {path.name}, an older checkpoint, because: " + "; ".join(problems),
                          CheckpointWarning, stacklevel=2)
        return path
    if problems:
        raise ModelFileError(f"cannot resume {run_dir}: no checkpoint is intact: " + "; ".join(problems)
                             + ". Start the run again (train with --overwrite) or restore a backup.")
    return None


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO using write_checkpoint / read_checkpoint."""

    def __init__(self) -> None:
        self.written: dict[Path, tuple] = {}  # path -> file_identity of the file this process wrote there

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """storage_options {"copy_to": other path}: also copy the written file there (best.ckpt
        found at the step last.ckpt is written: a copy, not a link, so damage to one file leaves
        the other to fall back on)."""
        path = Path(path)
        if path.name == LAST and path.is_file():
            keep_previous(path, self.written.get(path))
        write_checkpoint(checkpoint, path)
        self.written[path] = file_identity(path)
        copy_to = (storage_options or {}).get("copy_to")
        if copy_to is not None:
            with replacing(copy_to) as tmp:
                shutil.copyfile(path, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return read_checkpoint(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
