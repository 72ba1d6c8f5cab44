"""Fork server for the crash tests: import omnivae and Lightning once, then run each
training attempt in a forked child that the test can SIGKILL at any moment.

Protocol (one JSON object a line). The test writes {"run_dir": ..., "config": {...}} on
stdin; this process answers on stdout with lines starting with "@@":
  @@fork <pid>        a child was started for the command
  @@training <pid>    the child reached Trainer.fit's first training step hook
  @@exit <pid> <code> the child ended (code -9 when SIGKILLed, 0 when training finished)
A child resumes (train_run(resume=True)) when run_dir/run.yaml exists (train_run writes it
after the model folder), else it starts the run over (overwrite=True).
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import traceback
from pathlib import Path

import torch

torch.set_num_threads(1)

from lightning.pytorch.callbacks import Callback  # noqa: E402

import omnivae.train.trainer as trainer_module  # noqa: E402
from omnivae.run import train_run  # noqa: E402

# protocol lines go to the original stdout; everything else printed (by Lightning, by a
# child killed mid-line) goes to stderr, so it can never split a protocol line
OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)


def say(message: str) -> None:
    OUT.write(f"@@{message}\n")
    OUT.flush()


class Announce(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        say(f"training {os.getpid()}")


def child(run_dir: Path, config: dict) -> int:
    original = trainer_module.make_trainer

    def make_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(Announce())
        return trainer

    trainer_module.make_trainer = make_trainer
    try:
        if (run_dir / "run.yaml").is_file():
            train_run(None, run_dir, resume=True)
        else:
            train_run(config, run_dir, overwrite=True)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    say("ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:  # child: train, then leave without running the parent's cleanup
            code = 1
            try:
                sys.stdin.close()
                faulthandler.dump_traceback_later(90, exit=True)  # a hung attempt shows where it hangs
                code = child(Path(command["run_dir"]), command["config"])
            finally:
                for stream in (sys.stdout, sys.stderr, OUT):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(code)
        say(f"fork {pid}")
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        say(f"exit {pid} {code}")


if __name__ == "__main__":
    main()
