"""CLI fuzzing (hypothesis): random verbs, flags, values and paths thrown at `omnivae` never
end in a Python traceback, never exit 0 after printing an error, and never change a file
outside the folders the command was told to write.

Verbs and their options are read from the typer app itself, so a new verb or option is fuzzed
without touching this file. Every example runs in a fresh copy of a small sandbox: one real
trained run folder, an .npz file, an image folder with metadata.jsonl, a non-run folder of
unrelated files ("precious"), a regular file, a folder whose name has spaces and non-ASCII
letters, and paths that do not exist. The sandbox is the working directory, so default output
folders (runs/demo, runs/train, generated/) land in it, and the whole sandbox is compared
(size, mtime, SHA-256 of every file) before and after each call.

What may change (`allowed`):
  * folder outputs (--out of demo, train, generate, evaluate, retrieve, pull; train --resume):
    anything inside, if the folder did not exist or was empty, is an omnivae run folder, or
    holds the verb's own output marker (outputs.json, metrics.json, results.json, config.json);
    nothing inside any other existing folder or file;
  * file outputs (--out of embed, detect, impute): that file (and missing parent folders),
    unless it is a file the command reads (--data, --config, the files of --model, --run's
    run.yaml and model) and --force is not given, as `impute` documents;
  * nothing else, anywhere.

Each verb is its own test (test_cli_fuzz[VERB]), so a bug in one verb does not stop the others
from being fuzzed. The expensive verbs are bounded so the module stays within about a minute on a
busy machine: `bench` (it writes into the source checkout's benchmarks/results and runs for
minutes) only runs with --help; `serve` runs with uvicorn.run replaced (no socket is opened);
`demo` always gets one argument that makes it refuse (a demo takes over a minute even with a
tiny budget); `train` and `evaluate` get such an argument in most examples and tiny budgets
(--set train.max_steps=1, --scorer-epochs 1) in the rest. The Hub verbs talk to a closed local
port, never to the network; MNIST is looked for in an empty folder, never downloaded. A call
running longer than SECONDS_PER_CALL counts as a hang (SIGALRM; so no pytest-timeout mark here).

Derandomized like test_reliability_fuzz.py: OMNIVAE_FUZZ_RANDOM=1 explores new inputs,
OMNIVAE_FUZZ_EXAMPLES=n sets the examples per verb, OMNIVAE_FUZZ_COLLECT=1 lists every violation
(with its command line) instead of failing at the first, OMNIVAE_FUZZ_LOG=FILE logs every call
with its exit code. Command lines that found a CLI bug are pinned in test_cli_regressions, which
fails until the bug is fixed.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.models import MODELS

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

FUZZ = settings(max_examples=int(os.environ.get("OMNIVAE_FUZZ_EXAMPLES", "12")), deadline=None,
                derandomize=not os.environ.get("OMNIVAE_FUZZ_RANDOM"), database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)
CASES = {"tried": 0}  # examples run (all verbs), for docs/reliability.md
FOUND: dict[str, str] = {}  # OMNIVAE_FUZZ_COLLECT=1: violation -> the first command line showing it
COLLECT = bool(os.environ.get("OMNIVAE_FUZZ_COLLECT"))
SECONDS_PER_CALL = 90  # one call running longer than this counts as a hang

runner = CliRunner()


def counted(fn):
    """Count examples tried across properties."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        CASES["tried"] += 1
        return fn(*args, **kwargs)
    return wrapper


# -- the verbs, read from the app --------------------------------------------------------------
def _verbs(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):  # a sub-group such as `data`
            yield from _verbs(command, (*prefix, name))
        else:
            yield (*prefix, name), command


VERBS: dict[tuple[str, ...], object] = dict(_verbs(typer.main.get_command(app)))
FILE_OUT = {"embed", "detect", "impute"}  # --out is a file; any other verb's --out is a folder
OUTPUT_MARKERS = {"generate": "outputs.json", "evaluate": "metrics.json", "retrieve": "results.json",
                  "interpolate": "outputs.json", "traverse": "outputs.json", "pull": "config.json"}
DEFAULT_OUT = {"train": "runs/train"}  # given as None in the signature; the verb picks this one


def options_of(command) -> list:
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


def arguments_of(command) -> list:
    return [p for p in command.params if p.param_type_name == "argument"]


# -- the sandbox -----------------------------------------------------------------------------
TINY = {
    "data": {"source": "shapes", "options": {"n": 120, "level": "easy", "image_size": 16}, "test_fraction": 0.1},
    "model": {"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [32]}, "text": {"hidden": 16, "embed_dim": 8, "max_len": 6}}},
    "train": {"max_epochs": 1, "batch_size": 32, "progress": False, "tensorboard": False, "num_threads": 1,
              "patience": None},
}
CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
UNICODE_DIR = "my files ü ß"
PRECIOUS = {"notes.txt": "do not lose this\n", "data.csv": "a,b\n1,2\n", "report.html": "<p>my own report</p>\n",
            "sub/todo.md": "- nothing to lose\n"}


def write_image_folder(root: Path, size: int = 16, mode: str = "RGB", column: str = "text") -> None:
    """Six PNGs with captions in metadata.jsonl (one caption empty)."""
    import json

    root.mkdir()
    rows = []
    for i in range(6):
        Image.new(mode, (size, size), color=(i * 40, 255 - i * 40, 90) if mode == "RGB" else i * 40).save(
            root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", column: "" if i == 2 else CAPTIONS[i % 4]})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The sandbox every example starts from (copied, never used in place)."""
    return build_sandbox(tmp_path_factory.mktemp("cli_fuzz"))


def build_sandbox(base: Path) -> Path:
    """base/work: the sandbox (a trained run folder and the files around it); base/hf, base/nodata:
    empty Hub cache and data folders for the environment."""
    work = base / "work"
    work.mkdir()
    (base / "config.yaml").write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["train", "--config", str(base / "config.yaml"), "--out", str(work / "run")])
    assert result.exit_code == 0, result.output
    (work / "config.yaml").write_text(yaml.safe_dump(TINY))
    (work / "bad.yaml").write_text("data: [source: shapes\n  model: {\n")
    rng = np.random.default_rng(0)
    n = 8
    np.savez(work / "data.npz", image=(rng.random((n, 3, 16, 16)) * 255).astype(np.uint8),
             text=np.array([CAPTIONS[i % 4] if i % 3 else "" for i in range(n)]),
             mask__text=np.array([bool(i % 3) for i in range(n)]))
    write_image_folder(work / "images")  # what the run's model reads: image [3, 16, 16] and text
    write_image_folder(work / "gray", size=8, mode="L", column="caption")  # a data set it does not fit
    for name, text in PRECIOUS.items():
        (work / "precious" / name).parent.mkdir(parents=True, exist_ok=True)
        (work / "precious" / name).write_text(text)
    (work / "precious" / "sub" / "empty").mkdir()
    (work / "README.txt").write_text("a regular file\n")
    (work / UNICODE_DIR).mkdir()
    shutil.copy(work / "data.npz", work / UNICODE_DIR / "données.npz")
    (work / UNICODE_DIR / "note ß.txt").write_text("ünïcödé\n")
    (work / "empty").mkdir()
    (base / "hf").mkdir()
    (base / "nodata").mkdir()
    return base


@pytest.fixture
def cli_env(monkeypatch, pristine):
    """No network, no real caches, no server socket; torch threads restored after each call."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: served.append(kw))
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(pristine / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "OMNIVAE_DATA_DIR": str(pristine / "nodata"), "WANDB_MODE": "disabled", "COLUMNS": "200"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("OMNIVAE_MNIST_DIR", "OMNIVAE_BENCHMARKS_DIR", "HF_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    return pristine


# -- values ------------------------------------------------------------------------------------
EXISTING = ["run", "run/model", "run/run.yaml", "run/model/config.json", "run/checkpoints/last.ckpt", "config.yaml",
            "bad.yaml", "data.npz", "images", "images/0.png", "gray", "precious", "precious/notes.txt",
            "precious/data.csv",
            "precious/sub", "precious/sub/empty", "README.txt", UNICODE_DIR, f"{UNICODE_DIR}/données.npz",
            f"{UNICODE_DIR}/note ß.txt", "empty", ".", ".."]
ABSENT = ["missing", "missing/deeper/x", "new_out", "new out ü ß", "precious/new", "README.txt/below",
          "runs/demo", "generated"]
FILE_NAMES = ["z.npz", "z.npy", "z.csv", "z.parquet", "z.txt", "precious/new.csv", "new dir ü/z.npz"]
PATHS = st.sampled_from(EXISTING + ABSENT) | st.sampled_from(FILE_NAMES) | st.just("")
NUMBERS = st.sampled_from(["-1", "0", "1", "2", "3", "1.5", "-0.5", "abc", "", "nan", "inf", "1e3",
                           str(2 ** 64), "0x10", "-0"])
FLOATS = st.sampled_from(["0", "0.05", "0.5", "1", "-0.1", "1.5", "nan", "inf", "-inf", "abc", "", "1e-300"])
MODALITIES = st.sampled_from(["image", "text", "label", "bogus", "", "image,text", "text,image", "IMAGE", ",",
                              "text,text"])
MODEL_NAMES = st.sampled_from([*sorted(MODELS), "bogus", "", "MVAE"])
SET_PAIRS = st.sampled_from([
    "train.max_epochs=1", "train.max_steps=1", "data.options.n=20", "model.latent_dim=2", "train.batch_size=8",
    "data.test_fraction=0.2", "train.patience=null", "model.model=mvae", "data.source=shapes",
    "nokey", "trian.x=1", "data.options.n=-5", "data.options.n=0", "data.options.n=1", "=", "train.=1",
    "model.latent_dim=abc", "model.latent_dim=0", "train.max_epochs=-1", "data=5", "train.max_epochs=[",
    "model.model=bogus", "data.source=nowhere", "train.lr=nan", "train.num_threads=0", "data.options.bogus=1",
    "model.modalities.image.hidden=[]", "data.options.path=missing", "train.batch_size=0", "x=1",
    "data.options.level=bogus", "data.test_fraction=1.5", "model=3", "train.seed=-1", f"train.seed={2 ** 64}",
    "data.split_seed=-1", "data.options.image_size=16", "model.conditional_prior=null"])
TEXTS = st.sampled_from(["", " ", "x", "bogus", "-", "a red circle", "ü ß", "0", "--", "-x", "[red]markup[/]"])
INPUTS = st.sampled_from(["a red circle", "", "   ", "images/0.png", "data.npz", "1,2,3", "0", "missing.png",
                          "precious/notes.txt", "text", "image", "a zebra flying", "-1", "[bold]x"])

BY_NAME = {  # option / argument name (the Python parameter) -> values
    "out": PATHS, "model": PATHS | MODEL_NAMES, "run": PATHS, "resume": PATHS, "config": PATHS,
    "data": PATHS | st.sampled_from(["shapes", "mnist", "polymnist", "folder", "arrays", "bogus"]),
    "index": PATHS | st.sampled_from(["shapes", "bogus"]), "path": PATHS, "model_dir": PATHS,
    "value": INPUTS, "name": MODEL_NAMES, "set_": SET_PAIRS,
    "source": MODALITIES | st.sampled_from(["shapes", "mnist", "folder", "arrays", "bogus"]),
    "to": MODALITIES, "given": MODALITIES, "query": MODALITIES, "gallery": MODALITIES,
    "level": st.sampled_from(["easy", "medium", "hard", "partial", "bogus", ""]),
    "strategy": st.sampled_from(["greedy", "sample", "beam", "auto", "bogus", ""]),
    "split": st.sampled_from(["auto", "train", "val", "test", "all", "bogus", ""]),
    "score": st.sampled_from(["latent", "likelihood", "neg_elbo", "nll_image", "cross_nll_text", "disagreement",
                              "bogus", ""]),
    "devices": st.sampled_from(["1", "auto", "0", "-1", "abc", ""]),  # never >1: that would start processes
    "num_nodes": st.sampled_from(["1", "0", "-1", "abc"]),
    "host": st.sampled_from(["127.0.0.1", "0.0.0.0", "", "bad host"]),
    "port": st.sampled_from(["0", "8000", "-1", "70000", "abc"]),
    "log_level": st.sampled_from(["info", "bogus", ""]),
    "endpoint": st.sampled_from(["http://127.0.0.1:9", "", "not a url", "ftp://127.0.0.1:9"]),
    "revision": st.sampled_from(["main", "", "nope", "../x"]),
    "repo": st.sampled_from(["user/repo", "hf://user/repo@main", "bad", "", "../../x", "a/b/c", "user/repo@"]),
    "only": st.sampled_from(["seed-vae", "bogus"]),
    "threads": st.sampled_from(["-1", "0", "1", "2", "abc", str(2 ** 64)]),
    "contamination": FLOATS, "fpr": FLOATS, "temperature": FLOATS, "timeout": FLOATS,
    "minutes": st.sampled_from(["0.001", "0", "-1", "nan", "abc"]),
    "n": st.sampled_from(["-1", "0", "1", "2", "3", "abc", "", "1.5", str(2 ** 64)]),  # 10**6 shapes: a minute
    "n_eval": st.sampled_from(["-1", "0", "1", "16", "abc"]),
    "scorer_epochs": st.sampled_from(["-1", "0", "1", "abc"]),
}
BOGUS_OPTIONS = ["--nope", "-x", "--out=", "--set", "--help", "--", "-"]

# the expensive verbs: arguments that make them refuse before any work (each checked by hand;
# not `demo --minutes -1` nor `train --set train.max_epochs=-1`: both are accepted and run on), and tiny budgets
POISON = {
    "demo": [["--model", "bogus"], ["--level", "bogus"], ["--n", "-1"], ["--n", "0"], ["--out", "precious"],
             ["--out", "README.txt"], ["--out", "."], ["--out", "run/model"]],
    "train": [["--set", "model.model=bogus"], ["--set", "trian.x=1"], ["--out", "precious"], ["--config", "bad.yaml"],
              ["--set", "data.source=nowhere"], ["--out", "README.txt"], ["--resume", "precious"]],
    "evaluate": [["--split", "bogus"], ["--model", "missing"], ["--n-eval", "-1"], ["--scorer-epochs", "-1"],
                 ["--out", "README.txt"]],
}
BUDGET = {
    "train": ["--set", "train.max_steps=1", "--set", "train.max_epochs=1", "--set", "train.max_minutes=0.2"],
    "evaluate": ["--n-eval", "16", "--scorer-epochs", "1"],
}


# values that get a verb past its first checks (tried first, so shrinking goes to them too)
GOOD = {"model": ["run/model"], "run": ["run"], "config": ["config.yaml"],
        "data": ["data.npz", "images", "shapes", f"{UNICODE_DIR}/données.npz"], "index": ["run", "data.npz", "images"],
        "path": ["images", "data.npz", f"{UNICODE_DIR}/données.npz"], "model_dir": ["run/model"],
        "repo": ["user/repo"], "value": ["a red circle", "images/0.png", "a blue square"],
        "query": ["text", "image"], "gallery": ["image", "text"], "given": ["text", "image"],
        "to": ["image", "text", "image,text"], "source": ["text", "image"]}
GOOD_FOR = {("data", "source"): ["shapes", "folder", "arrays"], ("demo", "model"): sorted(MODELS)}
TAME = {  # "tame" examples draw every value but the paths from these (each valid somewhere)
    "n": ["1", "2"], "seed": ["0", "7"], "split": ["auto", "test", "all", "train"], "level": ["easy", "hard"],
    "score": ["latent", "likelihood", "neg_elbo", "nll_image", "cross_nll_text", "disagreement"],
    "strategy": ["greedy", "sample", "beam"], "temperature": ["0", "0.5", "1"], "contamination": ["0.05", "0.5"],
    "fpr": ["0.05", "0.5"], "batch_size": ["1", "8"], "k": ["1", "3"], "given": ["text", "image"],
    "set_": ["data.options.n=20", "data.options.image_size=16", "train.max_epochs=1", "train.patience=null",
             "data.test_fraction=0.2"],
    "host": ["127.0.0.1"], "port": ["0", "8000"], "max_n": ["4"], "max_body": ["100000"], "timeout": ["5"],
    "max_queue": ["4"], "threads": ["1"], "log_level": ["info"], "n_eval": ["16"], "scorer_epochs": ["1"],
    "devices": ["1"], "num_nodes": ["1"], "endpoint": ["http://127.0.0.1:9"], "revision": ["main"],
    "minutes": ["0.001"], "name": sorted(MODELS), "only": ["seed-vae"]}


def values(verb: tuple[str, ...], name: str, tame: bool = False):
    """The values drawn for option / argument `name` of `verb`."""
    good = GOOD_FOR.get((verb[0], name), GOOD.get(name))
    if tame and (good or name in TAME):
        return st.sampled_from(good or TAME[name])
    pool = BY_NAME.get(name, PATHS | NUMBERS | TEXTS)
    return st.sampled_from(good) | pool if good else pool


@st.composite
def command_lines(draw, verb: tuple[str, ...]) -> list[str]:
    """A random `omnivae VERB` command line: some of its options (required ones and the inputs
    named in GOOD usually), values from the pools above, now and then an option it does not have.
    Half the examples are "tame": required options and inputs always given, values other than
    paths drawn from TAME, no unknown options, so they get past parsing into the verb itself."""
    tame = draw(st.booleans())
    command = VERBS[verb]
    args = list(verb)
    options = options_of(command)
    chosen = [p for p in options if (p.required or p.name in GOOD) and (tame or draw(st.integers(0, 9)) > 1)]
    chosen += draw(st.lists(st.sampled_from(options), max_size=2 if tame else 4, unique_by=lambda p: p.name)) \
        if options else []
    for param in draw(st.permutations(chosen)):
        flag = draw(st.sampled_from(param.opts + param.secondary_opts))
        if param.is_flag:
            args.append(flag)
        else:
            args += [flag, draw(values(verb, param.name, tame))]
    if not tame and draw(st.integers(0, 19)) == 0:
        args.append(draw(st.sampled_from(BOGUS_OPTIONS)))
    for param in arguments_of(command):
        if param.nargs == -1:
            args += draw(st.lists(values(verb, param.name, tame), min_size=1 if param.required or tame else 0,
                                  max_size=3))
        elif param.required or tame or draw(st.booleans()):
            args.append(draw(values(verb, param.name, tame)))
    name = verb[-1]
    if name == "bench":
        args.append("--help")  # it writes into the source checkout and runs for minutes
    elif name == "demo" or (name in POISON and draw(st.integers(0, 3)) > 0):
        args += draw(st.sampled_from(POISON[name]))
    elif name in BUDGET:
        if name == "train" and not {"--config", "-c", "--resume"} & set(args):
            args += ["--config", "config.yaml"]  # its tiny model: the library's default one trains for a minute
        if name == "train" and last_value(args, "--data") == "shapes":  # 10,000 images of 32 x 32 by default
            args += ["--set", "data.options.n=60", "--set", "data.options.image_size=16"]
        args += BUDGET[name]
    return args


# -- one call and its checks ---------------------------------------------------------------------
def tree(root: Path) -> dict[str, tuple]:
    """path (relative to root) -> ("dir",) | ("link", target) | (size, mtime_ns, sha256)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                out[key] = ("link", os.readlink(path))
            elif path.is_dir():
                out[key] = ("dir",)
            else:
                st_ = path.stat()
                out[key] = (st_.st_size, st_.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "omnivae-run.json").is_file() or (path / "model" / "config.json").is_file())


def last_value(args: list[str], *names: str) -> str | None:
    """The value an option ends up with (click keeps the last one), or None if not given."""
    value = None
    for i, a in enumerate(args):
        for name in names:
            if a == name and i + 1 < len(args):
                value = args[i + 1]
            elif a.startswith(name + "="):
                value = a[len(name) + 1:]
    return value


def inputs_read(args: list[str], cwd: Path) -> list[Path]:
    """Files the command reads: --data, --config, --model's files, --run's run.yaml and model files."""
    found = []
    for option in ("--data", "--config", "-c", "--model", "-m", "--run"):
        value = last_value(args, option)
        if value is None:
            continue
        path = Path(os.path.normpath(cwd / value))
        found.append(path)
        if option == "--run":
            found += [path / "run.yaml", *(path / "model").glob("*")]
        elif option in ("--model", "-m") and path.is_dir():
            found += list(path.glob("*"))
    return found


def same_file(a: Path, b: Path) -> bool:
    try:
        return a == b or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def write_targets(args: list[str], cwd: Path) -> list[tuple[Path, str]]:
    """(path, "all" | "file") the command may write: decided from the state before the call."""
    verb = args[0]
    command = VERBS.get((verb,))
    if command is None:
        return []
    out = last_value(args, "--out")
    if out is None:
        default = next((p.default for p in options_of(command) if p.name == "out"), None)
        out = DEFAULT_OUT.get(verb, None if default is None else str(default))
    if verb == "train" and last_value(args, "--resume") is not None:
        out = last_value(args, "--resume")
    if out is None:
        return []
    path = Path(os.path.normpath(cwd / out))
    if verb in FILE_OUT:
        if path.is_dir() or ("--force" not in args and any(same_file(path, i) for i in inputs_read(args, cwd))):
            return []
        return [(path, "file")]
    if not path.exists() or (path.is_dir() and not any(path.iterdir())) or is_run_folder(path):
        return [(path, "all")]
    marker = OUTPUT_MARKERS.get(verb)
    if marker and (path / marker).is_file():
        return [(path, "all")]
    return []


def allowed(rel: str, root: Path, targets, before: dict) -> bool:
    """Whether a change at `rel` (relative to root) is inside what the call may write."""
    path = root / rel
    for target, kind in targets:
        if path == target or (kind == "all" and target in path.parents):
            return True
        if rel not in before and path in target.parents:
            return True  # a missing parent folder of the target, made for it
    return False


class CallTimeout(Exception):
    """Raised in the call by SIGALRM after SECONDS_PER_CALL."""


def _alarm(signum, frame):
    raise CallTimeout(f"the call ran longer than {SECONDS_PER_CALL} s")


def violations(args: list[str], result, before: dict, after: dict, root: Path, targets) -> list[str]:
    """What is wrong with one call: a traceback or hang, an odd exit code, exit 0 after an error
    message, or a change to the sandbox outside `targets`."""
    found = []
    output = result.output or ""
    exc = result.exception
    if isinstance(exc, CallTimeout):
        found.append(f"hang: {exc}")
    elif exc is not None and not isinstance(exc, SystemExit):
        found.append(f"traceback: {type(exc).__name__}: {str(exc)[:160]}")
    if result.exit_code not in (0, 1, 2, 130, 143):
        found.append(f"exit code {result.exit_code}")
    if result.exit_code == 0 and re.search(r"(?im)^\s*error:|─ Error ─", output):  # fail()'s line, click's box
        found.append("exit 0 after printing an error")
    if result.exit_code == 0 and "Traceback (most recent call last)" in output:
        found.append("exit 0 after printing a traceback")
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    bad = [k for k in changed if not allowed(k, root, targets, before)]
    for kind, keys in (("deleted", [k for k in bad if k not in after]), ("new", [k for k in bad if k not in before]),
                       ("modified", [k for k in bad if k in before and k in after])):
        if keys:
            found.append(f"{kind} outside the folders it may write: {keys[:6]}")
    return found


def invoke(args: list[str], base: Path):
    """Run `omnivae ARGS` in a fresh copy of the sandbox: (violations, result)."""
    root = Path(tempfile.mkdtemp(prefix="ex-", dir=base))
    work = root / "work"
    shutil.copytree(base / "work", work, symlinks=True)
    home, threads = os.getcwd(), torch.get_num_threads()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        os.chdir(work)
        targets = write_targets(args, work)
        before = tree(root)
        signal.alarm(SECONDS_PER_CALL)
        try:
            result = runner.invoke(app, args, catch_exceptions=True)
        finally:
            signal.alarm(0)
        after = tree(root)
        return violations(args, result, before, after, root, targets), result
    finally:
        signal.signal(signal.SIGALRM, previous)
        os.chdir(home)
        torch.set_num_threads(threads)
        shutil.rmtree(root, ignore_errors=True)


def check(args: list[str], base: Path) -> None:
    started = time.monotonic()
    problems, result = invoke(args, base)
    line = "omnivae " + shlex.join(args)
    if os.environ.get("OMNIVAE_FUZZ_LOG"):  # a file: every command line, its exit code and last words
        with open(os.environ["OMNIVAE_FUZZ_LOG"], "a", encoding="utf-8") as log:
            said = " ".join(result.output.split())[-200:]
            log.write(f"{result.exit_code} {time.monotonic() - started:5.1f}s {line}\n    {said}\n")
    if problems and COLLECT:
        for p in problems:
            key = f"{args[0]}: {re.sub(r'[0-9]+', 'N', p)[:120]}"
            said = " ".join(result.output.split())[-300:]
            FOUND.setdefault(key, f"{line}\n    exit {result.exit_code}; output: {said}")
        return
    assert not problems, (f"{line}\n(run in a copy of the sandbox)\n" + "\n".join(problems)
                          + f"\nexit code {result.exit_code}; output:\n{result.output[-2000:]}")


# -- the property --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(VERBS), ids=" ".join)
@FUZZ
@given(data=st.data())
@counted
def test_cli_fuzz(cli_env, verb, data):
    """Every registered verb (sub-commands included) gets its own examples, so one verb's bug does
    not stop the others from being fuzzed."""
    check(data.draw(command_lines(verb), label="command line"), cli_env)


# -- what the fuzz found ---------------------------------------------------------------------
# Minimal command lines (run in the sandbox) for each CLI bug the fuzz found, with what happened
# and what should happen. Each fails until its bug is fixed (then it guards against regressions).
BIG = str(2 ** 64)
FOUND_BUGS = [
    # --out is a folder where a file is written, or a file (or below one) where a folder is: a bare
    # OSError (exit 1); should be `error: ...` naming the --out (exit 2), before any work is done
    pytest.param(["detect", "--run", "run", "--out", "run"], id="detect-out-is-a-folder"),
    pytest.param(["detect", "--run", "run", "--out", "README.txt/scores.csv"], id="detect-out-below-a-file"),
    pytest.param(["embed", "--run", "run", "--out", "README.txt/z.npz"], id="embed-out-below-a-file"),
    pytest.param(["generate", "--model", "run/model", "--out", "README.txt"], id="generate-out-is-a-file"),
    pytest.param(["retrieve", "--run", "run", "--query", "text", "--gallery", "image", "--out", "README.txt",
                  "a red circle"], id="retrieve-out-is-a-file"),
    pytest.param(["evaluate", "--run", "run", "--out", "README.txt", "--n-eval", "16", "--scorer-epochs", "1"],
                 id="evaluate-out-is-a-file"),
    # seeds outside what torch / numpy take: a bare ValueError (exit 1); should be refused up front (exit 2)
    pytest.param(["generate", "--model", "run/model", "--seed", BIG], id="generate-seed-2**64"),
    pytest.param(["detect", "--run", "run", "--out", "z.csv", "--seed", BIG], id="detect-seed-2**64"),
    pytest.param(["evaluate", "--run", "run", "--out", "new", "--seed", BIG, "--n-eval", "16", "--scorer-epochs", "1"],
                 id="evaluate-seed-2**64"),
    pytest.param(["demo", "--seed", BIG, "--n", "-1"], id="demo-seed-2**64"),
    pytest.param(["train", "--config", "config.yaml", "--set", "train.seed=-1"], id="train-seed-negative"),
    pytest.param(["train", "--config", "config.yaml", "--set", f"train.seed={BIG}"], id="train-seed-2**64"),
    # evaluate --n-eval below 1: a bare RuntimeError / IndexError from the metrics (exit 1); should be
    # refused like --scorer-epochs 0 is (exit 2)
    pytest.param(["evaluate", "--run", "run", "--out", "new", "--n-eval", "-1"], id="evaluate-n-eval-negative"),
    pytest.param(["evaluate", "--model", "run/model", "--data", "data.npz", "--out", "new", "--n-eval", "0"],
                 id="evaluate-n-eval-0"),
    # train.max_steps ending before the first validation, with early stopping on (the default patience):
    # Lightning's EarlyStopping raised a bare RuntimeError (val/loss not logged yet); fixed in
    # src/omnivae/train/trainer.py while this file was written, kept as a guard
    pytest.param(["train", "--config", "config.yaml", "--set", "train.patience=3", "--set", "train.max_steps=1"],
                 id="train-max-steps-before-validation"),
    # an --out that is a file the command reads is replaced (exit 0, the input is gone); should be refused
    # without --force, as `impute --out` (same file as --data) already is
    pytest.param(["embed", "--model", "run/model", "--data", "data.npz", "--out", "data.npz"], id="embed-out-is-data"),
    pytest.param(["detect", "--model", "run/model", "--data", "data.npz", "--out", "data.npz"],
                 id="detect-out-is-data"),
    pytest.param(["detect", "--run", "run", "--out", "run/run.yaml"], id="detect-out-is-run-yaml"),
    # folder outputs written into an existing folder that is neither new, a run, nor the verb's own output:
    # evaluate replaces the folder's own report.html, and leaves figures/ there even when it fails; generate
    # and retrieve add their files among the user's (and would replace any of the same name). Should be
    # refused as train/demo refuse a non-empty folder that is not a run (or write only into a new subfolder)
    pytest.param(["evaluate", "--run", "run", "--out", "precious", "--n-eval", "16", "--scorer-epochs", "1"],
                 id="evaluate-replaces-report-html-in-unrelated-folder"),
    pytest.param(["evaluate", "--model", "run/model", "--data", "shapes", "--out", "precious"],
                 id="evaluate-fails-but-leaves-figures-in-unrelated-folder"),
    pytest.param(["generate", "--model", "run/model", "--out", "precious"], id="generate-into-unrelated-folder"),
    pytest.param(["retrieve", "--run", "run", "--query", "text", "--gallery", "image", "--out", "precious",
                  "a red circle"], id="retrieve-into-unrelated-folder"),
]


@pytest.mark.parametrize("args", FOUND_BUGS)
def test_cli_regressions(cli_env, args):
    check(args, cli_env)


def test_every_verb_is_fuzzed():
    """The strategy draws from every registered verb (sub-groups included), read from the app."""
    names = {" ".join(v) for v in VERBS}
    assert {"train", "generate", "data inspect"} <= names, names


def test_cli_fuzz_case_count_is_reported():
    """Runs last in this module: prints how many fuzz examples were tried (for the docs)."""
    print(f"\nCLI fuzz examples tried in this module: {CASES['tried']}")
    for problem, line in FOUND.items():
        print(f"VIOLATION {problem}\n    {line}")
