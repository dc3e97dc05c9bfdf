"""``gridwatch bench startup``: how long a fresh ``gridwatch`` process takes to answer.

Each command is run as a new process (``python -m gridwatch.cli ...``, the imports the
``gridwatch`` script makes), ``RUNS`` times, in turn with the baseline: the bare interpreter
starting and exiting (``python -c pass``), so that both see the same machine. The ``db``
command is ``db status`` on an empty home folder (the server never started, no
``GRIDWATCH_DATABASE_URL``): it reads the settings and the server's state and needs no server.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from gridwatch.bench import Figure
from gridwatch.settings import Settings

__all__ = ["bench_startup", "COMMANDS"]

RUNS = 11
GOAL_MS = "<= 500"  # the 0.5 s
COMMANDS = (("--help",), ("db", "--help"), ("db", "status"))
_BASELINE = (sys.executable, "-c", "pass")


def _milliseconds(argv: tuple[str, ...], env: dict[str, str]) -> float:
    """Wall-clock milliseconds of one process, start to exit."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - started) * 1000


def bench_startup(settings: Settings, *, scale: str) -> list[Figure]:
    """p50 wall time of ``gridwatch --help``, ``gridwatch db --help`` and ``gridwatch db status`` (any scale)."""
    with tempfile.TemporaryDirectory() as home:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}, "GRIDWATCH_HOME": home}
        runs: dict[tuple[str, ...], list[float]] = {argv: [] for argv in (_BASELINE, *COMMANDS)}
        for _ in range(RUNS):
            runs[_BASELINE].append(_milliseconds(_BASELINE, env))
            for argv in COMMANDS:
                runs[argv].append(_milliseconds((sys.executable, "-m", "gridwatch.cli", *argv), env))
    baseline = float(np.percentile(runs[_BASELINE], 50))
    return [Figure(f"start-up p50 gridwatch {' '.join(argv)} ({RUNS} processes)", float(np.percentile(runs[argv], 50)),
                   "ms", GOAL_MS, baseline, "python -c pass") for argv in COMMANDS]
