"""The live feed simulator: its tracks and schedule, and a bounded run over each protocol."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from gridwatch.data import fixed_end, generate_sample
from gridwatch.data.simulator import invent_tracks, load_tracks, parse_speed, schedule, simulate

from _ingest import REGION_SQL, IngestProcess, provision, rows
from _refdata import empty_tables


@pytest.mark.parametrize(("text", "factor"), [("10x", 10.0), ("1", 1.0), ("0.5X", 0.5)])
def test_parse_speed(text: str, factor: float) -> None:
    assert parse_speed(text) == factor


def test_parse_speed_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="is not a factor such as 10x"):
        parse_speed("fast")


def test_invented_tracks_stay_in_their_box_and_are_never_stamped_ahead() -> None:
    tracks = invent_tracks(units=5, bbox=(100.0, 22.0, 100.2, 22.2), span_s=600, interval_s=10)
    assert tracks["lon"].between(100.0, 100.2).all() and tracks["lat"].between(22.0, 22.2).all()
    assert tracks["callsign"].nunique() == 5 and tracks["t"].is_monotonic_increasing
    plan = schedule(tracks, speed=10.0, duration_s=30.0, wall_start=1_000_000.0)
    assert plan["send_at"].max() <= 30.0
    assert (plan["t"] <= 1_000_000.0 + plan["send_at"] + 1e-6).all(), "a fix stamped after it is sent"
    assert np.allclose(np.diff(plan["t"]), np.diff(tracks["t"].iloc[: len(plan)]))  # real spacing, real speeds


def test_sample_positions_load_as_tracks(tmp_path: Path) -> None:
    generate_sample(tmp_path, seed=1, scale="small", end=fixed_end(1))
    tracks = load_tracks(tmp_path)
    assert {"callsign", "t", "lon", "lat", "speed_kmh", "heading", "accuracy_m"} <= set(tracks.columns)
    assert len(tracks) > 1000 and tracks["t"].is_monotonic_increasing and tracks["callsign"].nunique() > 3


@pytest.fixture(scope="module")
def service(engine: sa.Engine, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestProcess]:
    empty_tables(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(REGION_SQL)
    process = IngestProcess(db_url, tmp_path_factory.mktemp("sim")).start()
    yield process
    process.stop()


def stored(url: str, prefix: str) -> int:
    return rows(url, "SELECT count(*) FROM position p JOIN unit u ON u.id = p.unit_id WHERE u.callsign LIKE %s",
                (f"{prefix}-%",))[0][0]


@pytest.mark.parametrize("protocol", ["osmand", "cot"])
def test_simulated_units_reach_the_database(service: IngestProcess, db_url: str, protocol: str) -> None:
    prefix = f"S{protocol[0].upper()}"
    tracks = invent_tracks(units=4, span_s=600, interval_s=10, prefix=prefix, seed=3)
    tokens = provision(db_url, sorted(set(tracks["callsign"])), create_units=True)
    url = f"tcp://127.0.0.1:{service.cot_port}" if protocol == "cot" else service.base
    started = time.monotonic()
    report = asyncio.run(simulate(tracks, protocol=protocol, url=url, tokens=tokens, speed=60.0, duration_s=4.0))
    assert time.monotonic() - started < 15
    assert report.sent > 20 and report.acknowledged == report.sent and report.errors == 0
    deadline = time.monotonic() + 20
    while stored(db_url, prefix) < report.acknowledged and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored(db_url, prefix) == report.acknowledged


def test_simulate_command_provisions_and_sends_json_batches(service: IngestProcess, db_url: str) -> None:
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": db_url, "GRIDWATCH_HOME": str(service.home)}
    result = subprocess.run(
        [sys.executable, "-m", "gridwatch.cli", "simulate", "--protocol", "json",
         "--url", service.base, "--speed", "60x", "--duration", "3", "--units", "3", "--provision"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "simulating 3 units over json" in result.stdout and "refused none" in result.stdout
    service.wait_drained()
    assert stored(db_url, "SIM") > 0
