"""How many torch threads to use: the cores this process may have, less those other programs
keep busy. Training (train.num_threads unset) and evaluation ask default_threads."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

_IMPORTED = time.monotonic()  # busy_elsewhere's clock where process_age has none


def default_threads(cores: int, processes: int = 1, busy: float | None = None) -> int:
    """Torch threads per process: the cores shared among this run's `processes`, less those other
    programs keep busy (`busy`; None: busy_elsewhere()). On a busy machine a parallel region
    waits for its slowest thread, and a thread that shares its core with another program stalls
    every step: beside busy processes one thread ran the same training steps 1.7-4x faster than
    two on this project's 2-core machine (benchmarks/bench_threads.py)."""
    busy = busy_elsewhere() if busy is None else busy
    free = cores - int(busy + 0.5)
    return max(1, min(cores // max(1, processes), free))


def process_age() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included), from
    /proc/self/stat and /proc/uptime; None where /proc is not there."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def cpu_ticks() -> tuple[int, int]:
    """(all ticks, idle ticks) of every CPU so far, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[3] + fields[4]  # idle + iowait


def busy_now(window: float = 0.15) -> float | None:
    """Cores that programs other than this one keep busy over the next `window` seconds: CPU
    ticks not idle (/proc/stat) less this process's own CPU time. None where /proc/stat is not
    there. Unlike the load average, it does not lag: right after other work ends it reads 0."""
    try:
        (total0, idle0), own0 = cpu_ticks(), os.times()
        time.sleep(window)
        (total1, idle1), own1 = cpu_ticks(), os.times()
    except (OSError, ValueError, IndexError):
        return None
    span = total1 - total0
    if span <= 0:
        return None
    cores = os.cpu_count() or 1  # the ticks count every CPU of the machine
    own = (own1.user + own1.system - own0.user - own0.system) / window
    return max(0.0, (span - (idle1 - idle0)) / span * cores - own)


def busy_elsewhere() -> float:
    """Cores other programs keep busy: measured now (busy_now) where the system says, else the
    1-minute load average less this process's share of it (its mean number of running threads
    since it started, as the average has taken it in: a steady load's share after t seconds is
    1 - exp(-t / 60)). The load average lags by about a minute, so a run started right after
    other work would take one thread too few. 0 where neither is there."""
    now = busy_now()
    if now is not None:
        return now
    if not hasattr(os, "getloadavg"):
        return 0.0
    age, times = process_age(), os.times()
    age = time.monotonic() - _IMPORTED if age is None else age  # no /proc: since this module's import
    own = (times.user + times.system) / age * (1 - math.exp(-age / 60)) if age > 0 else 0.0
    return max(0.0, os.getloadavg()[0] - own)
