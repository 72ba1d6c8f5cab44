"""The `omnivae` command starts without loading torch, Lightning or matplotlib (each verb imports
what it needs when it runs), so --help and argument errors answer at once; the names of
`import omnivae` still work, loaded on first use. Times: benchmarks/bench_startup.py."""
import subprocess
import sys

HEAVY = ("torch", "numpy", "lightning", "matplotlib", "sklearn", "transformers", "fastapi")


def loaded_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


def test_the_cli_imports_no_heavy_library_before_a_verb_runs():
    assert loaded_after("import omnivae.cli") == []
    assert loaded_after("import omnivae") == []


def test_the_package_names_load_on_first_use():
    import omnivae

    assert omnivae.Batch.__module__ == "omnivae.batch" and callable(omnivae.build_model)
    assert omnivae.load.__name__ == "load_model" and "mopoe" in omnivae.MODELS
    assert set(omnivae.__all__) <= set(dir(omnivae))
    try:
        omnivae.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_the_demo_help_names_every_shapes_level():
    from omnivae.cli.run import SHAPES_LEVELS
    from omnivae.data.shapes import LEVELS

    assert SHAPES_LEVELS == tuple(LEVELS)


def test_the_cli_freezes_what_is_left_at_exit_after_finalising_the_garbage(tmp_path):
    """The CLI's exit handler collects the garbage there is (a cycle whose finaliser writes a file
    still writes it) and then freezes the rest, so shutdown does not traverse it."""
    marker = tmp_path / "finalised.txt"
    probe = (
        "import atexit, gc, omnivae.cli\n"
        "class Node:\n"
        "    def __del__(self):\n"
        f"        open({str(marker)!r}, 'w').write('done')\n"
        "a, b = Node(), Node(); a.other, b.other = b, a; del a, b\n"
        "gc.disable()\n"  # the cycle is left for the exit handler, not for a collection on the way
        "atexit._run_exitfuncs()\n"
        "print(gc.get_freeze_count())\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert int(out.strip()) > 1000
    assert marker.read_text() == "done"
