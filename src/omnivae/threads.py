"""How many torch threads to use: the cores this process may have, less those other programs
keep busy. Training (train.num_threads unset) and evaluation ask default_threads."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

_IMPORTED = time.monotonic()  # process_age's fallback clock


def default_threads(cores: int, processes: int = 1, busy: float | None = None) -> int:
    """Torch threads per process: the cores shared among this run's `processes`, less those other
    programs keep busy (`busy`; None: busy_elsewhere()). On a busy machine a parallel region
    waits for its slowest thread, and a thread that shares its core with another program stalls
    every step: beside busy processes one thread ran the same training steps 1.7-4x faster than
    two on this project's 2-core machine (benchmarks/bench_threads.py)."""
    busy = busy_elsewhere() if busy is None else busy
    free = cores - int(busy + 0.5)
    return max(1, min(cores // max(1, processes), free))


def process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere since this module's import)."""
    try:
        start = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - start / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED


def busy_elsewhere() -> float:
    """Cores other programs keep busy: the 1-minute load average less this process's share of it
    (its mean number of running threads since it started, as the average has taken it in:
    a steady load's share after t seconds is 1 - exp(-t / 60)). 0 where there is no load average."""
    if not hasattr(os, "getloadavg"):
        return 0.0
    age, times = process_age(), os.times()
    own = (times.user + times.system) / age * (1 - math.exp(-age / 60)) if age > 0 else 0.0
    return max(0.0, os.getloadavg()[0] - own)
