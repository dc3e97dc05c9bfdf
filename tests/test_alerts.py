"""Alerts: each kind raised on hand-made rows and cleared when its condition ends; acknowledgement of one
alert or a group; idempotence; the panel's groups, relative times and lengths.

The tiny region of :mod:`tests._refdata` starts "quiet" (segments and grids just visited,
both units reporting inside their area); each case adds one condition, then removes it.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from plotly.utils import PlotlyJSONEncoder

from gridwatch.dashboard.dispatch_panels import alert_list
from gridwatch.etl.alerts import AlertNotFound, acknowledge, acknowledge_all, refresh_alerts
from gridwatch.layers.alerts import alerts_at
from gridwatch.settings import Settings

from _refdata import WEST, seed_region

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(minutes=1)
SETTINGS = Settings(unit_silent_after_s=600)

QUIET = f"""
UPDATE unit SET area_geom = ST_GeomFromText('{WEST}', 4326);
INSERT INTO unit_latest (unit_id, ts, geom, accuracy, source)
SELECT id, :now, ST_SetSRID(ST_MakePoint(100.05, 22.1), 4326), 10, 'test' FROM unit;
INSERT INTO segment_coverage (segment_id, last_visit, limit_h, status) SELECT id, :now, 4, 'patrolled' FROM border_segment;
INSERT INTO grid_coverage (grid_id, last_visit, limit_h, status) SELECT id, :now, 24, 'fresh' FROM grid;
INSERT INTO hex_coverage (h3, last_visit, limit_h, status, geom)
VALUES (42, :now, 4, 'fresh', ST_GeomFromText('POLYGON((100 22, 100.01 22, 100.01 22.01, 100 22))', 4326));
"""

CASES = {  # kind: (subject, SQL raising it, SQL ending it)
    "segment_overdue": ("1", "UPDATE segment_coverage SET last_visit = CAST(:now AS timestamptz) - interval '5 hours' "
                             "WHERE segment_id = 1",
                        "UPDATE segment_coverage SET watched = true WHERE segment_id = 1"),
    "unit_silent": ("1", "UPDATE unit_latest SET ts = CAST(:now AS timestamptz) - interval '11 minutes' WHERE unit_id = 1",
                    "UPDATE unit SET status = 'off_duty' WHERE id = 1"),
    "unit_out_of_area": ("2", "UPDATE unit_latest SET geom = ST_SetSRID(ST_MakePoint(100.1005, 22.1), 4326) "
                              "WHERE unit_id = 2",  # ~52 m outside, accuracy 10 m
                         "UPDATE unit_latest SET accuracy = 60 WHERE unit_id = 2"),
    "incident_in_gap": ("7", "INSERT INTO incident (id, source_id, kind, severity, status, reported_at, geom, grid_id, h3) "
                             "VALUES (7, 'I7', 'intrusion_alarm', 4, 'reported', :now, "
                             "ST_SetSRID(ST_MakePoint(100.15, 22.1), 4326), 2, 42); "
                             "UPDATE hex_coverage SET last_visit = NULL",
                        "UPDATE incident SET status = 'closed', closed_at = :now"),
    "checkpoint_unstaffed": ("5", "INSERT INTO checkpoint (id, code, line_no, staffed, geom) "
                                  "VALUES (5, 'CP5', 2, false, ST_SetSRID(ST_MakePoint(100.1, 22.1), 4326))",
                             "UPDATE checkpoint SET staffed = true"),
    "leak_route": (None, "INSERT INTO leak_route (line_no, length_m, geom) VALUES (2, 1000, "
                         "ST_GeomFromText('MULTILINESTRING((100.1 22, 100.1 22.2))', 4326))",
                   "DELETE FROM leak_route"),
}


@pytest.fixture
def quiet(clean_db: sa.Engine) -> sa.Engine:
    with clean_db.begin() as conn:
        conn.execute(sa.text("TRUNCATE alert RESTART IDENTITY"))
    seed_region(clean_db)
    run(clean_db, QUIET)
    return clean_db


def run(engine: sa.Engine, sql: str, now: datetime = NOW) -> None:
    with engine.begin() as conn:
        for statement in filter(str.strip, sql.split(";")):
            conn.execute(sa.text(statement), {"now": now})


def refresh(engine: sa.Engine, now: datetime):
    with engine.begin() as conn:
        return refresh_alerts(conn, SETTINGS, now)


def open_alerts(engine: sa.Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text("SELECT kind, subject FROM alert WHERE cleared_at IS NULL"))}


def test_quiet_region_has_no_alert(quiet):
    assert refresh(quiet, NOW).raised == 0
    assert open_alerts(quiet) == set()


@pytest.mark.parametrize("kind", list(CASES))
def test_alert_raised_and_cleared(quiet, kind):
    subject, raise_sql, clear_sql = CASES[kind]
    run(quiet, raise_sql)
    assert refresh(quiet, NOW).raised == 1
    (got,) = open_alerts(quiet)
    assert got[0] == kind
    if subject is not None:
        assert got[1] == subject
    run(quiet, clear_sql)
    assert refresh(quiet, LATER).cleared == 1
    assert open_alerts(quiet) == set()
    with quiet.connect() as conn:
        row = conn.execute(sa.text("SELECT raised_at, cleared_at FROM alert")).one()
    assert (row.raised_at, row.cleared_at) == (NOW, LATER)


def test_refresh_is_idempotent_and_keeps_raised_at(quiet):
    for _, raise_sql, _ in CASES.values():
        run(quiet, raise_sql)
    first = refresh(quiet, NOW)
    assert first.raised == len(CASES)
    second = refresh(quiet, LATER)
    assert (second.raised, second.updated, second.cleared) == (0, 0, 0)
    with quiet.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*), min(raised_at), max(raised_at) FROM alert")).one() == (
            len(CASES), NOW, NOW)


def test_alert_detail_follows_the_condition(quiet):
    run(quiet, CASES["unit_out_of_area"][1])
    refresh(quiet, NOW)
    run(quiet, "UPDATE unit_latest SET geom = ST_SetSRID(ST_MakePoint(100.11, 22.1), 4326) WHERE unit_id = 2")
    assert refresh(quiet, LATER).updated == 1
    (row,) = alerts_at(quiet).itertuples()
    assert row.detail["callsign"] == "V1" and 1000 < row.detail["distance_m"] < 1050
    assert row.raised_at == NOW


def test_severity_then_newest_first_and_history(quiet):
    run(quiet, CASES["unit_silent"][1])
    refresh(quiet, NOW)
    run(quiet, CASES["leak_route"][1])
    refresh(quiet, LATER)
    assert alerts_at(quiet)["kind"].tolist() == ["leak_route", "unit_silent"]
    assert alerts_at(quiet, at=NOW + timedelta(seconds=30))["kind"].tolist() == ["unit_silent"]


def test_acknowledge_stores_who_and_when_and_audits_it(quiet):
    run(quiet, CASES["checkpoint_unstaffed"][1])
    refresh(quiet, NOW)
    alert_id = int(alerts_at(quiet)["id"].iloc[0])
    with quiet.begin() as conn:
        at = acknowledge(conn, alert_id, "wang.li", address="10.0.0.5")
    with quiet.connect() as conn:
        row = conn.execute(sa.text("SELECT acknowledged_by, acknowledged_at FROM alert WHERE id = :id"),
                           {"id": alert_id}).one()
        audited = conn.execute(sa.text("SELECT actor, address, at FROM audit_log WHERE action = 'alert_acknowledged' "
                                       "AND detail->>'alert' = :id AND at = :at"), {"id": str(alert_id), "at": at}).one()
    assert row == ("wang.li", at)
    assert tuple(audited) == ("wang.li", "10.0.0.5", at)
    assert abs((at - datetime.now(timezone.utc)).total_seconds()) < 60
    with quiet.begin() as conn, pytest.raises(AlertNotFound, match="already acknowledged"):
        acknowledge(conn, alert_id, "zhao")


def test_refresh_needs_an_aware_time(quiet):
    with quiet.begin() as conn, pytest.raises(ValueError, match="time zone"):
        refresh_alerts(conn, SETTINGS, datetime(2026, 5, 1))


def _both_silent_then_a_leak_route(engine: sa.Engine) -> None:
    run(engine, "UPDATE unit_latest SET ts = CAST(:now AS timestamptz) - interval '11 minutes'")
    refresh(engine, NOW)  # the first refresh: both units were already silent
    run(engine, CASES["leak_route"][1].replace("1000", "152960"))
    refresh(engine, LATER)


def _panel(alerts, lang: str, now: datetime) -> str:
    return json.dumps(alert_list(alerts, lang=lang, timezone="Asia/Shanghai", live=True, now=now),
                      cls=PlotlyJSONEncoder, ensure_ascii=False)


def test_alerts_carry_their_place_and_whether_the_first_refresh_raised_them(quiet):
    _both_silent_then_a_leak_route(quiet)
    alerts = alerts_at(quiet)
    assert alerts[["kind", "subject", "place", "at_start"]].values.tolist() == [
        ["leak_route", alerts["subject"].iloc[0], "Town", False], ["unit_silent", "2", "Town", True],
        ["unit_silent", "1", "Town", True]]


@pytest.mark.parametrize("lang, texts", [
    ("en", ["Leak route past line 2 (153.0 km)", "12 min ago", "Units silent · Town (2)", "13 min ago",
            "Acknowledge all 2"]),
    ("zh", ["第2道防线漏管通道（153.0 公里）", "12分钟前", "警力失联 · Town（2）", "全部确认（2）"]),
])
def test_the_panel_groups_by_kind_and_place_says_already_true_once_in_km_and_relative_times(quiet, lang, texts):
    _both_silent_then_a_leak_route(quiet)
    alerts = alerts_at(quiet)
    panel = _panel(alerts, lang, LATER + timedelta(minutes=12))
    for text in texts:
        assert text in panel
    heading = "Already true when alerting began" if lang == "en" else "已存在"
    assert panel.count(heading) == 1 and "152960" not in panel
    silent = ",".join(map(str, alerts.loc[alerts["kind"] == "unit_silent", "id"]))
    assert panel.count(f'"ids": "{silent}"') == 1  # one group button, naming exactly its members
    for alert_id in alerts["id"]:
        assert panel.count(f'"id": {alert_id}, "type": "dispatch-ack"') + panel.count(
            f'"type": "dispatch-ack", "id": {alert_id}') == 1  # one button per alert, carrying its id


def test_acknowledging_a_group_acknowledges_exactly_its_members_and_audits_each(quiet):
    _both_silent_then_a_leak_route(quiet)
    alerts = alerts_at(quiet)
    members = sorted(alerts.loc[alerts["kind"] == "unit_silent", "id"].astype(int))
    with quiet.begin() as conn:
        assert acknowledge_all(conn, [*members, 9999], "group.ack", address="10.0.0.7") == members
    with quiet.connect() as conn:
        acked = conn.execute(sa.text("SELECT id, acknowledged_by FROM alert WHERE acknowledged_at IS NOT NULL "
                                     "ORDER BY id")).all()
        audited = conn.execute(sa.text(
            "SELECT (a.detail->>'alert')::bigint FROM audit_log a JOIN alert l ON l.id = (a.detail->>'alert')::bigint "
            "WHERE a.action = 'alert_acknowledged' AND a.actor = 'group.ack' AND a.at = l.acknowledged_at "
            "ORDER BY 1")).scalars().all()
    assert [tuple(r) for r in acked] == [(i, "group.ack") for i in members]
    assert audited == members
    with quiet.begin() as conn:
        assert acknowledge_all(conn, members, "someone.else") == []

