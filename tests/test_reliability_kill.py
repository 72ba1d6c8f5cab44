"""Crash safety: training processes are SIGKILLed at random moments and resumed.

tests/helpers/train_forker.py imports omnivae once, then runs each attempt in a forked
child (one CPU thread) that this test kills with SIGKILL. Shown here:
  * after every kill, every .ckpt in the run folder passes read_checkpoint (no torn file);
  * every resumed run finishes;
  * the resumed run's final weights equal the uninterrupted run's, both for step
    checkpoints (kills resume mid-epoch) and for epoch-end checkpoints only (kills restart
    the interrupted epoch from its start).
Figures (kills, kills during a checkpoint write, max weight difference) are printed; run
with -s to see them.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnivae.train.checkpoint import read_checkpoint

HELPER = Path(__file__).parent / "helpers" / "train_forker.py"
MAX_EPOCHS = 6
CONFIG = {
    "data": {"source": "shapes", "options": {"n": 400, "level": "easy", "image_size": 16}, "test_fraction": 0.1},
    "model": {"model": "mvae", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [32]}, "text": {"hidden": 16, "embed_dim": 8, "max_len": 6}}},
    "train": {"max_epochs": MAX_EPOCHS, "batch_size": 32, "progress": False, "tensorboard": False,
              "num_threads": 1, "patience": None, "log_every_n_steps": 5},
}
KILLS_PER_CHAIN = 5


class Forker:
    """The helper process and its line protocol, with deadlines (no test can hang)."""

    def __init__(self, log: Path):
        self.log = open(log, "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(HELPER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        self.pending = b""  # bytes read but not yet split into lines (select() cannot see them)
        self.expect("ready", timeout=90)

    def lines(self, deadline: float):
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                yield line.decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"the helper exited (see {self.log.name})")
            self.pending += chunk

    def expect(self, word: str, timeout: float) -> list[str]:
        for line in self.lines(time.monotonic() + timeout):
            if "@@" + word in line:
                return line[line.index("@@" + word):].split()
        raise AssertionError(f"no '@@{word}' from the helper within {timeout} s (see {self.log.name})")

    def attempt(self, run_dir: Path, config: dict, kill_after: float | None) -> tuple[int, float]:
        """One training attempt; SIGKILL it `kill_after` seconds after its fork. -> (exit code, seconds)."""
        self.proc.stdin.write((json.dumps({"run_dir": str(run_dir), "config": config}) + "\n").encode())
        self.proc.stdin.flush()
        pid, start = int(self.expect("fork", timeout=30)[1]), time.monotonic()
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = int(self.expect(f"exit {pid}", timeout=120)[2])
        return code, time.monotonic() - start

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def every_checkpoint_is_whole(run_dir: Path) -> tuple[int, int]:
    """Assert each *.ckpt loads (checksum + weights-only load). -> (checkpoints, temp files)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return 0, 0
    ckpts = sorted(folder.glob("*.ckpt"))
    for path in ckpts:
        state = read_checkpoint(path)  # raises ModelFileError on a torn or damaged file
        assert "state_dict" in state and "optimizer_states" in state, path
    return len(ckpts), len(list(folder.glob(".*.tmp-*")))


def attempt_summary(run_dir: Path, kill_after: float | None, code: int) -> str:
    """One line per attempt for failure messages: kill time, exit code, what last.ckpt holds."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return f"kill {kill_after} code {code}: no last.ckpt"
    state = read_checkpoint(last)
    fit_loop = state["loops"]["fit_loop"]
    batch = fit_loop["epoch_loop.batch_progress"]["current"]
    return (f"kill {kill_after and round(kill_after, 2)} code {code}: epoch {state['epoch']} step "
            f"{state['global_step']} batches {batch} loader {fit_loop['state_dict'].get('combined_loader')}")


def weights(run_dir: Path) -> tuple[dict, dict]:
    last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return last, load_file(str(run_dir / "model" / "model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    forker = Forker(tmp_path / "helper.log")
    rng = random.Random(int(os.environ.get("OMNIVAE_KILL_SEED", "20240611")))
    figures = {}
    try:
        code, duration = forker.attempt(tmp_path / "reference", CONFIG, None)
        assert code == 0, (tmp_path / "helper.log").read_text()[-3000:]
        ref_last, ref_model = weights(tmp_path / "reference")
        assert ref_last["epoch"] == MAX_EPOCHS - 1
        steps_per_epoch = ref_last["global_step"] // MAX_EPOCHS

        chains = {"every 3 steps": {**CONFIG, "train": {**CONFIG["train"], "checkpoint_every_n_steps": 3}},
                  "epoch ends only": CONFIG}
        for name, config in chains.items():
            run_dir = tmp_path / name.replace(" ", "_")
            kills = torn = attempts = resumed_mid_epoch = 0
            history: list[str] = []
            while True:
                kill_after = None
                if kills < KILLS_PER_CHAIN:  # somewhere in what is left of the run (setup included)
                    last = run_dir / "checkpoints" / "last.ckpt"
                    done = read_checkpoint(last)["global_step"] / ref_last["global_step"] if last.is_file() else 0
                    share = 0.5 if kills == 0 else 0.8  # the first kill surely lands before the end
                    kill_after = rng.uniform(0.05, max(0.4, share * (1 - done) * duration))
                code, _ = forker.attempt(run_dir, config, kill_after)
                attempts += 1
                _, temps = every_checkpoint_is_whole(run_dir)
                history.append(attempt_summary(run_dir, kill_after, code))
                if code == 0:
                    break
                assert code == -signal.SIGKILL, f"attempt {attempts} failed by itself (code {code}); " \
                    + (tmp_path / "helper.log").read_text()[-3000:]
                kills += 1
                torn += temps > 0
                last = run_dir / "checkpoints" / "last.ckpt"
                if last.is_file() and read_checkpoint(last)["global_step"] % steps_per_epoch:
                    resumed_mid_epoch += 1
            last, model = weights(run_dir)
            assert last["epoch"] == MAX_EPOCHS - 1 and last["global_step"] == ref_last["global_step"], "\n".join(history)
            diff = max(max_difference(ref_last["state_dict"], last["state_dict"]), max_difference(ref_model, model))
            figures[name] = {"kills": kills, "killed_with_temp_file_left": torn,
                             "resumes_from_mid_epoch_checkpoint": resumed_mid_epoch, "max_weight_diff": diff}
            assert kills >= 1
            assert diff <= 1e-6, f"{name}: resumed weights differ from the uninterrupted run by {diff}: {history}"
    finally:
        forker.close()
    print("\nkill test figures:", json.dumps(figures))
    assert sum(f["kills"] for f in figures.values()) >= KILLS_PER_CHAIN + 1
