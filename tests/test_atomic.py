"""omnivae.atomic, the one module that writes files and folders atomically: a failed write
leaves the old version in place and no temporary file behind."""
from __future__ import annotations

import fnmatch
import os

import pytest

from omnivae import atomic


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_bytes_and_text_create_parents_and_leave_nothing_behind(tmp_path):
    path = tmp_path / "a" / "b" / "data.bin"
    assert atomic.write_bytes(path, b"\x00\x01") == path
    assert path.read_bytes() == b"\x00\x01"
    atomic.write_text(path, "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    assert leftovers(path.parent) == []


def test_an_error_inside_replacing_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic.replacing(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_a_failed_rename_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_block_that_writes_nothing_is_an_error_and_changes_nothing(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(FileNotFoundError):
        with atomic.replacing(path):
            pass
    assert path.read_text() == "old"


def test_temporary_names_are_unique_and_match_the_cleanup_patterns(tmp_path):
    path = tmp_path / "last.ckpt"
    with atomic.replacing(path) as a, atomic.replacing(path) as b:  # two writers of one file at once
        assert a != b and a.parent == b.parent == tmp_path
        assert fnmatch.fnmatch(a.name, ".*.tmp-*") and fnmatch.fnmatch(a.name, ".last.ckpt.tmp-*")
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert path.read_bytes() == b"a" and leftovers(tmp_path) == []  # the last to finish wins


def test_remove_temporary_files_removes_only_temporary_files(tmp_path):
    for name in (".last.ckpt.tmp-1234", ".run.yaml.tmp-ab12", "last.ckpt", ".hidden"):
        (tmp_path / name).write_text("x")
    atomic.remove_temporary_files(tmp_path, "run.yaml")
    assert leftovers(tmp_path) == [".hidden", ".last.ckpt.tmp-1234"]
    atomic.remove_temporary_files(tmp_path)
    assert leftovers(tmp_path) == [".hidden"] and (tmp_path / "last.ckpt").is_file()


def test_replacing_folder_swaps_a_whole_folder_in(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic.replacing_folder(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and tmp.name.startswith(".model.")
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert leftovers(tmp_path) == []


def test_an_error_inside_replacing_folder_leaves_the_old_folder_intact(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.replacing_folder(target) as tmp:
            (tmp / "config.json").write_text("new")
            raise RuntimeError("save failed")
    assert (target / "config.json").read_text() == "old" and leftovers(tmp_path) == []


def test_replacing_folder_replaces_a_file_too(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file in the way")
    with atomic.replacing_folder(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert target.is_dir() and (target / "a.txt").read_text() == "a" and leftovers(tmp_path) == []


def test_restore_folder_puts_back_the_newest_complete_old_folder(tmp_path):
    target = tmp_path / "model"
    assert not atomic.restore_folder(target)  # nothing to restore
    for pid, complete in ((11, True), (12, False)):
        old = tmp_path / f".model.old-{pid}"
        old.mkdir()
        if complete:
            (old / "config.json").write_text(str(pid))
    assert atomic.restore_folder(target, lambda p: (p / "config.json").is_file())
    assert (target / "config.json").read_text() == "11"
    assert not atomic.restore_folder(target)  # the folder exists: left alone
