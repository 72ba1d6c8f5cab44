"""Atomic writes: a file or folder is built under a temporary name beside its target, then
renamed over it, so a reader (or a resumed run after a crash) sees the old version or the
new one, never half of one.

Temporary names: files `.NAME.tmp-XXXXXXXX`, folders `.NAME.XXXXXXXX`; a folder swap moves
the old folder to `.NAME.old-PID` for the moment between its two renames (`restore_folder`
puts it back after a crash there). Code that tidies up after crashes globs these names.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """An unused name for a temporary file beside `path`: .NAME.tmp-<random>."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


def remove_temporary_files(folder: str | os.PathLike, name: str = "*") -> None:
    """Delete the temporary files that interrupted writes of `name` (default: any file) in
    `folder` left behind; the real files are intact."""
    for tmp in Path(folder).glob(f".{name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_folder(folder: Path) -> None:
    """Make renames inside `folder` durable (not possible on every platform: then skipped)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (not yet created) for the caller to write; on
    success it is flushed to disk and renamed over `path`, on an error it is removed and
    `path` is left as it was. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def promote(finished: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put a finished temporary file (written and checked by the caller, e.g. a resumable
    download's `.part`) in place of `path`: flushed to disk, then renamed over it."""
    finished, path = Path(finished), Path(path)
    fsync_file(finished)
    os.replace(finished, path)
    fsync_folder(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns the path."""
    return write_bytes(path, text.encode(encoding))


@contextmanager
def replacing_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside `path` for the caller to fill; on success it replaces
    `path` whole (whatever was there, a folder or a file, is removed), on an error it is
    removed and `path` is left as it was. Two renames: the old folder to .NAME.old-PID, the
    new one in; if the second fails, the old one is moved back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_folder(path.parent)
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink(missing_ok=True)


def restore_folder(path: str | os.PathLike, complete: Callable[[Path], bool] = Path.is_dir) -> bool:
    """After a crash between the two renames of `replacing_folder` there is no `path`, only
    the previous folder as .NAME.old-PID: move the newest complete one back. True if it did."""
    path = Path(path)
    if path.exists():
        return False
    olds = [p for p in path.parent.glob(f".{path.name}.old-*") if complete(p)]
    if not olds:
        return False
    try:
        os.replace(max(olds, key=lambda p: p.stat().st_mtime), path)
    except OSError:  # another process put it back first, or the folder is read-only
        return False
    return True
