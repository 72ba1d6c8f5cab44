"""Where a verb may write: checked before any work, so no user file is replaced or mixed with
outputs by accident. Folders: new, empty, or one the same verb wrote before (it holds that
verb's own file). Files: never one of the command's own inputs (the data, the run's config,
the model), unless the verb has --force."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omnivae.errors import ConfigError
from omnivae.run_folder import RunFolder


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (after resolving links; hard links count too)."""
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def no_file_in_the_way(path: Path) -> None:
    """Refuse a path that runs through a regular file (x.txt/out.csv)."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {path}: {parent} is a file, not a folder")
            return


def out_folder(path: Path, own: str, verb: str) -> Path:
    """--out as a folder of outputs: new, empty, or one `omnivae VERB` wrote before (holding `own`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file; {verb} writes a folder: give a new folder name")
    no_file_in_the_way(path)
    if path.is_dir() and any(path.iterdir()) and not (path / own).is_file():
        raise ConfigError(f"--out {path} already holds other files; give a new or empty folder (or one that "
                          f"omnivae {verb} wrote before: it holds {own})")
    return path


def out_file(path: Path, inputs: list[Path | None], force: bool | None = None) -> Path:
    """--out as one file: not a folder, not through a file, and not one of `inputs` (or a file of an
    input folder) unless force (None: the verb has no --force)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name")
    no_file_in_the_way(path)
    if force or not path.exists():
        return path
    for given in (Path(p) for p in inputs if p is not None):
        inside = given.is_dir() and path.resolve().parent == given.resolve()
        if inside or same_file(path, given):
            hint = " (or pass --force to replace it)" if force is False else ""
            raise ConfigError(f"--out {path} is {'a file of ' if inside else ''}an input of this command "
                              f"({given}): writing it would replace it. Choose another --out{hint}")
    return path


def run_inputs(model: Path | None, run: Path | None, data: str | None) -> list[Path | None]:
    """What a verb over a trained model reads: the model folder, the run's config, a data file."""
    folder = RunFolder(run) if run is not None else None
    model_dir = model if model is not None else (folder.model if folder is not None else None)
    return [model_dir, folder.config_file if folder is not None else None, Path(data) if data is not None else None]


@contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """A folder this command creates is taken away again if the command fails (nothing half-made stays)."""
    existed = Path(path).exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise
