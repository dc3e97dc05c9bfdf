"""Incident loading: severity names, status lifecycle, place checks, fusion, upsert by source_id."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from gridwatch.etl.incidents import load_incidents
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.runlog import RunCounts, job_run
from gridwatch.settings import Settings

from _refdata import rows, seed_region

EXPORTED = datetime(2026, 11, 20, 4, 0, tzinfo=timezone.utc)
HEADER = "source_id,kind,severity,status,reported_at,dispatched_at,on_scene_at,closed_at,lon,lat,note\n"
ROWS = {
    "I1": ("I1,intrusion_alarm,high,dispatched,2026-11-20T01:00:00Z,2026-11-20T01:05:00Z,,,100.15,22.01,fence", None),
    "I2": ("I2,traffic,2,closed,2026-11-20 09:00:00,2026-11-20 09:05:00,2026-11-20 09:20:00,2026-11-20 10:00:00,100.05,22.1,", None),
    "I3": ("I3,fire,5,reported,2026-11-20T01:00:00Z,,,,100.05,22.1,", "severity is not 1-4 or one of low/medium/high/critical"),
    "I4": ("I4,fire,1,on_scene,2026-11-20T01:00:00Z,2026-11-20T01:05:00Z,,,100.05,22.1,", "status on_scene without on_scene_at"),
    "I5": ("I5,fire,1,closed,2026-11-20T01:00:00Z,2026-11-20T00:05:00Z,,2026-11-20T02:00:00Z,100.05,22.1,", "status times out of order"),
    "I6": ("I6,fire,1,reported,yesterday,,,,100.05,22.1,", "unparseable reported_at"),
    "I7": ("I7,fire,1,reported,2026-11-20T01:00:00Z,,,,22.1,100.05,", "lat/lon swapped"),
    "I8": ("I8,fire,1,reported,2026-11-20T09:00:00Z,,,,100.05,22.1,", "time in the future"),
    "I9": ("I9,fire,1,escalated,2026-11-20T01:00:00Z,,,,100.05,22.1,", "status is not one of ['reported', 'dispatched', 'on_scene', 'closed']"),
    "I10": ("I10,fire,1,reported,2026-11-20T01:00:00Z,2026-11-20T01:05:00Z,,,100.05,22.1,", "dispatched_at given but the status is still earlier than dispatched"),
}


def write(path: Path, lines: list[str]) -> FileEntry:
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return FileEntry(path=path, target="incident")


def load(engine: sa.Engine, entries: list[FileEntry]) -> RunCounts:
    with job_run(engine, "incidents") as counts:
        load_incidents(engine, entries, settings=Settings(), counts=counts, default_timezone="Asia/Shanghai",
                       reference_time=EXPORTED)
    return counts


@pytest.fixture
def region(clean_db: sa.Engine) -> sa.Engine:
    seed_region(clean_db)
    return clean_db


def test_checks_reject_with_reasons_and_the_rest_is_fused(region, tmp_path):
    counts = load(region, [write(tmp_path / "inc.csv", [line for line, _ in ROWS.values()])])
    expected = {(sid, reason) for sid, (_, reason) in ROWS.items() if reason}
    assert set(rows(region, "SELECT record->>'source_id', reason FROM quarantine")) == expected
    assert (counts.rows_in, counts.rows_loaded, counts.rows_rejected) == (10, 2, 8)
    got = rows(region, "SELECT source_id, severity, status, grid_id, zone_id, segment_id, reported_at, note "
                       "FROM incident ORDER BY source_id")
    assert got == [
        ("I1", 3, "dispatched", 2, 1, 2, datetime(2026, 11, 20, 1, 0, tzinfo=timezone.utc), "fence"),
        ("I2", 2, "closed", 1, 2, 1, datetime(2026, 11, 20, 1, 0, tzinfo=timezone.utc), None),
    ]


def test_redelivered_incident_with_newer_status_updates_it(region, tmp_path):
    load(region, [write(tmp_path / "a.csv", [ROWS["I1"][0]])])
    on_scene = "I1,intrusion_alarm,critical,on_scene,2026-11-20T01:00:00Z,2026-11-20T01:05:00Z,2026-11-20T01:30:00Z,,100.15,22.01,"
    counts = load(region, [write(tmp_path / "b.csv", [on_scene, ROWS["I1"][0]])])
    assert rows(region, "SELECT status, severity, count(*) OVER () FROM incident") == [("on_scene", 4, 1)]
    assert rows(region, "SELECT reason FROM quarantine") == [("duplicate",)]
    assert (counts.rows_loaded, counts.rows_rejected) == (1, 1)
    stale = load(region, [write(tmp_path / "c.csv", [ROWS["I1"][0].replace("fence", "again")])])
    assert stale.rows_rejected == 1
    assert rows(region, "SELECT status FROM incident") == [("on_scene",)]
    assert ("stale: older status than the stored one",) in rows(region, "SELECT reason FROM quarantine")


def test_same_file_twice_changes_nothing(region, tmp_path):
    entry = write(tmp_path / "inc.csv", [line for line, _ in ROWS.values()])
    load(region, [entry])
    snapshot = rows(region, "SELECT * FROM incident ORDER BY id"), rows(region, "SELECT record, reason FROM quarantine")
    assert load(region, [entry]).rows_in == 0
    assert (rows(region, "SELECT * FROM incident ORDER BY id"), rows(region, "SELECT record, reason FROM quarantine")) == snapshot


def test_missing_column_names_file_and_column(region, tmp_path):
    path = tmp_path / "nosev.csv"
    path.write_text("source_id,kind,status,reported_at,lon,lat\nI1,fire,reported,2026-11-20T01:00:00Z,100.05,22.1\n")
    (outcome,) = load(region, [FileEntry(path=path, target="incident")]).files
    assert outcome.status == "refused" and outcome.message.startswith("required column(s) 'severity' missing")
