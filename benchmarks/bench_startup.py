"""Start-up time of the `omnivae` command: how long `omnivae --help` and an argument error take,
whole processes timed from launch to exit (the target: 0.5 s each), and which heavy libraries
the command imports before it does anything.

    python benchmarks/bench_startup.py [--runs 7] [--quick] [--out benchmarks/results]

Writes benchmarks/results/startup.json (startup_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)

COMMANDS = {"help": ["--help"], "argument_error": ["train", "--no-such-option"],
            "verb_help": ["generate", "--help"]}
TARGET_S = 0.5
HEAVY = ("torch", "lightning", "matplotlib", "sklearn", "transformers")


def command() -> list[str]:
    """The installed `omnivae` script next to this Python (the way users start it)."""
    script = Path(sys.executable).with_name("omnivae")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from omnivae.cli import app; app()"]


def time_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*command(), *args], capture_output=True, check=False)
    return time.perf_counter() - start


def imported_by_the_cli() -> list[str]:
    code = f"import sys, omnivae.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs each")
    parser.add_argument("--out", type=Path, default=c.RESULTS)
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    result = {"workload": "startup", "quick": args.quick, "runs_per_command": runs,
              "load_avg": os.getloadavg(), "heavy_modules_imported_by_the_cli": imported_by_the_cli(),
              "commands": {}, "targets": []}
    for name, cli_args in COMMANDS.items():
        time_once(cli_args)  # warm the file cache
        times = [time_once(cli_args) for _ in range(runs)]
        median = statistics.median(times)
        result["commands"][name] = {"args": cli_args, "median_s": round(median, 3), "max_s": round(max(times), 3),
                                    "times_s": [round(t, 3) for t in times]}
        result["targets"].append(c.target(f"omnivae {' '.join(cli_args)} (median)", round(median, 3), TARGET_S))
        print(f"omnivae {' '.join(cli_args)}: median {median:.3f} s, max {max(times):.3f} s")
    print("heavy modules imported by `import omnivae.cli`:", result["heavy_modules_imported_by_the_cli"] or "none")
    path = c.write_result("startup_quick" if args.quick else "startup", result, args.out)
    print(f"wrote {path}")
    print(json.dumps(result["targets"], indent=1))


if __name__ == "__main__":
    main()
