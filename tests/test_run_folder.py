"""RunFolder owns the run folder's layout: its paths, what counts as a run, the saved config and
the marker; no other module spells the layout's file names."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import omnivae
from omnivae.errors import ConfigError
from omnivae.run_folder import RunFolder

SRC = Path(omnivae.__file__).parent
LAYOUT_NAMES = ("run.yaml", "omnivae-run.json", "metrics.csv", "last.ckpt", "best.ckpt", "previous.ckpt")
# user-facing messages that name a file of the layout for the reader, with why they may
ALLOWED = {
    ("report/sections.py", "metrics.csv counts from 0"): "the report tells readers how the CSV log counts epochs",
}


def test_layout_paths(tmp_path):
    run = RunFolder(tmp_path)
    assert run.path == tmp_path
    assert run.marker == tmp_path / "omnivae-run.json"
    assert run.config_file == tmp_path / "run.yaml"
    assert run.model == tmp_path / "model"
    assert run.checkpoints == tmp_path / "checkpoints"
    assert run.best_checkpoint == tmp_path / "checkpoints" / "best.ckpt"
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert run.previous_checkpoint == tmp_path / "checkpoints" / "previous.ckpt"
    assert run.logs == tmp_path / "logs"
    assert run.metrics_csv == tmp_path / "logs" / "metrics.csv"
    assert RunFolder(str(tmp_path)).path == tmp_path


def test_metrics_files_keep_earlier_attempts_first(tmp_path):
    run = RunFolder(tmp_path)
    assert run.metrics_files() == []
    run.logs.mkdir()
    run.metrics_csv.write_text("epoch\n0\n")
    run.keep_previous_metrics()
    run.metrics_csv.write_text("epoch\n1\n")
    run.keep_previous_metrics()
    run.metrics_csv.write_text("epoch\n2\n")
    assert [p.name for p in run.metrics_files()] == ["metrics.part-000.csv", "metrics.part-001.csv", "metrics.csv"]
    assert [p.read_text().split()[1] for p in run.metrics_files()] == ["0", "1", "2"]


def test_resume_candidates_order(tmp_path):
    import os

    run = RunFolder(tmp_path)
    run.checkpoints.mkdir()
    for i, name in enumerate(("best-v1.ckpt", "best.ckpt", "previous.ckpt", "last.ckpt")):
        (run.checkpoints / name).write_bytes(b"x")
        os.utime(run.checkpoints / name, (1000 + i, 1000 + i))
    assert [p.name for p in run.resume_candidates()] == ["last.ckpt", "previous.ckpt", "best.ckpt", "best-v1.ckpt"]
    run.last_checkpoint.unlink()
    assert run.resume_candidates()[0] == run.previous_checkpoint


def test_is_run_on_run_non_run_and_empty_folders(tmp_path):
    empty = RunFolder(tmp_path / "empty")
    empty.path.mkdir()
    assert not empty.is_run() and not RunFolder(tmp_path / "missing").is_run()
    marked = RunFolder(tmp_path / "marked")
    marked.path.mkdir()
    marked.marker.write_text("{}")
    assert marked.is_run()
    old = RunFolder(tmp_path / "old")  # a run from before the marker: an omnivae model folder
    old.model.mkdir(parents=True)
    (old.model / "config.json").write_text(json.dumps({"format": "omnivae-model"}))
    assert old.is_run()
    swapped = RunFolder(tmp_path / "swapped")  # killed inside a model save: only .model.old-PID
    (swapped.path / ".model.old-12").mkdir(parents=True)
    (swapped.path / ".model.old-12" / "config.json").write_text(json.dumps({"format": "omnivae-model"}))
    assert swapped.is_run()
    other = RunFolder(tmp_path / "other")
    other.model.mkdir(parents=True)
    (other.model / "config.json").write_text(json.dumps({"format": "something-else"}))
    (other.path / "run.yaml").write_text("data: {}\n")  # a config alone does not make a run
    assert not other.is_run() and other.has_config()


def test_check_new_refuses_what_it_must(tmp_path):
    RunFolder(tmp_path / "new").check_new(overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        RunFolder(tmp_path / "file").check_new(overwrite=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an omnivae run folder.*omnivae-run.json"):
        RunFolder(tmp_path / "notes").check_new(overwrite=True)
    run = RunFolder(tmp_path / "run")
    run.create(overwrite=False)
    (run.path / "x").write_text("x")
    with pytest.raises(ConfigError, match="--overwrite to replace it"):
        run.check_new(overwrite=False)
    run.create(overwrite=True)  # replaced whole: only the new marker is left
    assert [p.name for p in run.path.iterdir()] == ["omnivae-run.json"]
    assert not list(tmp_path.glob(".run.replaced-*"))


def test_check_resumable_needs_the_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot resume.*no run.yaml.*--overwrite"):
        RunFolder(tmp_path).check_resumable()
    RunFolder(tmp_path).write_config({"data": {"source": "shapes"}})
    RunFolder(tmp_path).check_resumable()


def test_config_round_trip_and_read_errors(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(ConfigError, match="is not a run folder: run.yaml is missing"):
        run.read_config()
    assert run.saved_config() is None
    config = {"data": {"source": "shapes", "options": {"n": 10}}, "model": {"model": "mopoe"}}
    run.write_config(config)
    assert run.read_config() == config == run.saved_config()
    assert list(run.config_file.read_text().splitlines())[0] == "data:"  # keys keep their order
    run.config_file.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="run.yaml is not valid YAML"):
        run.read_config()
    assert run.saved_config() is None
    run.config_file.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        run.read_config()
    assert run.saved_config() is None


def test_marker_and_training_record_round_trip(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.read_marker() == {} and run.training_record() == {}
    run.create(overwrite=False)
    marker = run.read_marker()
    assert marker["format"] == "omnivae-run" and marker["omnivae_version"] == omnivae.__version__
    record = {"wall_seconds": 1.5, "epochs": 2, "steps": 8, "examples": {"train": 6, "val": 2, "test": 2}}
    run.write_training_record(record)
    assert run.training_record() == record
    assert {k: v for k, v in run.read_marker().items() if k != "training"} == marker
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]  # written atomically
    run.marker.write_text("not json")
    assert run.read_marker() == {} and run.training_record() == {}


def test_tidy_drops_temporary_files_and_puts_a_model_back(tmp_path):
    run = RunFolder(tmp_path)
    (tmp_path / ".model.old-5").mkdir()
    (tmp_path / ".model.old-5" / "config.json").write_text("{}")
    (tmp_path / ".model.abc123").mkdir()
    (tmp_path / ".run.yaml.tmp-0badf00d").write_text("half")
    run.checkpoints.mkdir()
    (run.checkpoints / ".last.ckpt.tmp-12345678").write_bytes(b"half")
    run.tidy()
    run.remove_temporary_checkpoints()
    assert (run.model / "config.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert list(run.checkpoints.iterdir()) == []


def help_and_doc_strings(tree: ast.AST) -> set[int]:
    """ids of string constants a user reads as documentation: docstrings, typer help= texts and
    module constants named *_HELP (help texts shared by several options)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skipped.add(id(first.value))
        elif isinstance(node, ast.keyword) and node.arg == "help":
            skipped.update(id(n) for n in ast.walk(node.value))
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.endswith("_HELP")
                                                  for t in node.targets):
            skipped.update(id(n) for n in ast.walk(node.value))
    return skipped


def layout_names_outside_run_folder() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "run_folder.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = help_and_doc_strings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skipped:
                continue
            for name in LAYOUT_NAMES:
                if name in node.value and not any(rel == f and snippet in node.value for f, snippet in ALLOWED):
                    found.append(f"{rel}:{node.lineno}: {name!r} in {node.value!r}")
    return found


def test_no_other_module_spells_the_run_folder_layout():
    found = layout_names_outside_run_folder()
    assert found == [], "ask omnivae.run_folder.RunFolder instead:\n" + "\n".join(found)


def test_the_layout_scan_finds_a_spelled_name(tmp_path):
    tree = ast.parse('"""run.yaml in a docstring is fine"""\nPATH = "run.yaml"\nHELP_HELP = "run.yaml"\n'
                     'f(help="see run.yaml")\n')
    skipped = help_and_doc_strings(tree)
    spelled = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in skipped
               and n.value == "run.yaml"]
    assert spelled == [2]
