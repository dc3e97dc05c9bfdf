"""A command imports what it needs: help and the ``db`` commands load no data, map or database library.

Counted from ``python -X importtime``, which names every module a fresh process imports.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridwatch import bench
from gridwatch.settings import get_settings

# What the data, map and web commands need, and none of help or the db commands.
HEAVY = ("geopandas", "shapely", "pandas", "numpy", "pyproj", "h3", "pyarrow", "dash", "plotly", "flask",
         "sqlalchemy", "psycopg", "alembic")


def _imported(*argv: str, home: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``gridwatch ARGV`` in a fresh process: its outcome, and the top-level packages it imported."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}, "GRIDWATCH_HOME": str(home)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gridwatch.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=120)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, {name.split(".")[0] for name in names} - {"import time:"}


@pytest.mark.parametrize("argv", [("--help",), ("db", "--help"), ("bench", "--help")])
def test_help_loads_neither_settings_nor_libraries(argv: tuple[str, ...], tmp_path: Path) -> None:
    done, packages = _imported(*argv, home=tmp_path)
    assert done.returncode == 0 and "Usage: " in done.stdout
    assert "click" in packages
    assert packages & {*HEAVY, "pydantic", "pydantic_settings"} == set()


@pytest.mark.parametrize(("argv", "code", "said"), [
    (("db", "status"), 3, "stopped"),
    (("db", "url"), 1, "never started"),
    (("db", "stop"), 0, "not running"),
])
def test_db_commands_load_the_settings_and_no_library(argv: tuple[str, ...], code: int, said: str,
                                                        tmp_path: Path) -> None:
    done, packages = _imported(*argv, home=tmp_path)
    assert done.returncode == code and said in done.stdout + done.stderr
    assert "pydantic_settings" in packages
    assert packages & set(HEAVY) == set()


def test_a_data_command_loads_its_libraries(tmp_path: Path) -> None:
    """The count sees a heavy import when one happens: ``sample`` builds frames with geopandas."""
    done, packages = _imported("sample", "--scale", "small", "--out", str(tmp_path / "region"), home=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"geopandas", "shapely", "numpy"} <= packages


def test_bench_all_runs_each_in_turn_and_totals_against_the_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench all`` over three of the benchmarks: one runs and prints its table, two are left out, saying why."""
    monkeypatch.setattr(bench, "BENCHMARKS", {name: bench.BENCHMARKS[name] for name in ("sample", "startup", "soak")})
    said: list[str] = []
    figures = bench.run_all(get_settings(), scale="prefecture", echo=said.append)
    assert said[0].startswith("== sample: left out of all (past the small scale it generates the province sample")
    assert said[1] == "== startup" and "start-up p50 gridwatch --help" in said[2]
    assert said[3].startswith("== soak: left out of all (it watches the wall")
    assert [f.name for f in figures] == ["bench startup wall time", "bench all --scale prefecture wall time (1 benchmarks)"]
    total = figures[-1]
    assert total.goal == "<= 15" and total.unit == "min" and total.baseline_name == "slowest: startup"
    assert total.value >= figures[0].value > 0
    assert "bench all --scale prefecture" in said[-1]
