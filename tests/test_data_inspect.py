"""describe / print_description / inspect_command: what a data set holds."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from omnivae.data.inspect import describe, guess_source, inspect_command, print_description
from omnivae.data.raw import RawData
from omnivae.errors import InputError


def small_raw() -> RawData:
    images = np.zeros((5, 1, 4, 4), dtype=np.uint8)
    text = ["A red circle", "a red square.", None, "", "blue"]
    label = np.array([0, 1, 1, -1, 1], dtype=np.int64)
    vec = np.ones((5, 2), dtype=np.float32)
    mask = {"image": np.array([1, 1, 1, 1, 0], bool), "label": label >= 0}
    return RawData({"image": images, "text": text, "label": label, "vec": vec},
                   {"image": "image", "text": "text", "label": "categorical", "vec": "vector"}, mask,
                   targets={"label": label.copy()}, info={"classes": {"label": ["no", "yes"]}, "source": "test"})


def test_describe_numbers():
    d = describe(small_raw())
    assert d["examples"] == 5 and d["complete"] == 2 and d["source"] == "test"
    m = d["modalities"]
    assert m["image"] == {"kind": "image", "present": 4, "missing": 1, "missing_fraction": 0.2,
                          "shape": [1, 4, 4], "dtype": "uint8"}
    t = m["text"]
    assert (t["present"], t["missing"], t["missing_fraction"]) == (3, 2, 0.4)
    assert t["vocab_size"] == 5  # a, red, circle, square, blue
    assert (t["words_min"], t["words_max"], t["distinct_captions"]) == (1, 3, 3)
    assert t["words_mean"] == pytest.approx(7 / 3)
    assert m["label"]["num_classes"] == 2 and m["label"]["counts"] == {"no": 1, "yes": 3}
    assert m["label"]["missing"] == 1
    assert m["vec"]["shape"] == [2] and m["vec"]["missing"] == 0
    assert d["targets"]["label"] == {"num_classes": 2, "counts": {"no": 1, "yes": 3}}
    json.dumps(d)  # JSON-ready


def test_print_description_renders_a_table():
    console = Console(file=io.StringIO(), width=160)
    print_description(small_raw(), console)
    out = console.file.getvalue()
    assert "5 examples (2 with every modality)" in out
    assert "vocabulary 5 words" in out and "2 (40.0%)" in out and "2 classes" in out


def make_folder(root: Path) -> Path:
    root.mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(np.full((8, 8), i * 30, dtype=np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "caption": "" if i == 2 else f"picture {i}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def test_inspect_command_picks_the_source(tmp_path):
    folder = make_folder(tmp_path / "f")
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2), dtype=np.float32))
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "y.npy", np.arange(4))
    assert (guess_source(folder), guess_source(tmp_path / "a.npz"), guess_source(npy)) == \
        ("folder", "arrays", "arrays")
    console = Console(file=io.StringIO(), width=160)
    d = inspect_command(folder, None, console=console)
    assert "warning:" in console.file.getvalue() and "caption 1" in console.file.getvalue()
    assert d["modalities"]["caption"]["missing"] == 1 and d["modalities"]["image"]["shape"] == [1, 8, 8]
    assert inspect_command(tmp_path / "a.npz", None, console=console)["examples"] == 3
    d = inspect_command(None, "shapes", {"n": 20}, console=console)
    assert d["examples"] == 20 and d["modalities"]["text"]["vocab_size"] > 3
    with pytest.raises(InputError, match="takes no path"):
        inspect_command(folder, "shapes", console=console)
    with pytest.raises(InputError, match="cannot tell"):
        inspect_command(tmp_path, None, console=console)


def test_typer_wiring(tmp_path):
    """The `data inspect` sub-command of the omnivae CLI."""
    from typer.testing import CliRunner

    from omnivae.cli import app

    runner = CliRunner()
    folder = make_folder(tmp_path / "f")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(app, ["data", "inspect", str(folder)], terminal_width=160)
        assert result.exit_code == 0, result.output
        assert "6 examples" in result.output and "caption" in result.output
        result = runner.invoke(app, ["data", "inspect", "--source", "shapes", "--set", "data.options.n=12"])
        assert result.exit_code == 0 and "12 examples" in result.output
        result = runner.invoke(app, ["data", "inspect", str(tmp_path / "missing")])
        assert result.exit_code == 2 and "does not exist" in result.output
