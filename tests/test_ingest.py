"""The live ingest service, end to end: real clients (curl, pytak), hostile input, refusals, crashes.

The service runs as a subprocess (``gridwatch ingest``) against the test
database; the crash tests give it a database server of its own to kill.
"""
from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytak
import pytest
import requests
import sqlalchemy as sa

from gridwatch.etl.database import ensure_database
from gridwatch.etl.ingest.cot import CotFramer, CotStreamError, parse_event
from gridwatch.etl.ingest.osmand import parse_osmand_query
from gridwatch.etl.server import EmbeddedServer
from gridwatch.settings import Settings

from _ingest import CENTRE, IngestProcess, cot_event, rows, seed
from _refdata import empty_tables

UNITS = {"V1": "vehicle", "V2": "vehicle", "C1": "vehicle", "J1": "vehicle", "F1": "foot", "R1": "vehicle",
         "X1": "vehicle"}


@pytest.fixture(scope="module")
def live(engine: sa.Engine, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IngestProcess, dict]]:
    """The service on the test database, with the tiny region and a device per unit in ``UNITS``."""
    empty_tables(engine)
    tokens = seed(db_url, UNITS)
    service = IngestProcess(db_url, tmp_path_factory.mktemp("ingest")).start()
    yield service, tokens
    service.stop()


def fixes_of(url: str, callsign: str) -> list[tuple]:
    return rows(url, "SELECT p.ts, p.speed, p.heading, p.accuracy, p.source, p.grid_id, p.zone_id, p.segment_id, "
                     "p.border_m, ST_X(p.geom), ST_Y(p.geom) FROM position p JOIN unit u ON u.id = p.unit_id "
                     "WHERE u.callsign = %s ORDER BY p.ts", (callsign,))


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


# -- parsing ----------------------------------------------------------------------
def test_osmand_speed_is_knots_and_times_take_every_form() -> None:
    report = parse_osmand_query({"id": "V1", "lat": "22.1", "lon": "100.05", "timestamp": "1790000000000",
                                 "speed": "10", "bearing": "90", "token": "t"})
    assert report.fix.speed_kmh == pytest.approx(18.52)
    assert report.fix.ts == datetime.fromtimestamp(1_790_000_000, tz=timezone.utc)
    assert report.token == "t"
    iso = parse_osmand_query({"id": "V1", "location": "22.1,100.05", "timestamp": "2026-11-20 08:00:00"})
    assert (iso.fix.lat, iso.fix.lon) == (22.1, 100.05)
    assert iso.fix.ts == datetime(2026, 11, 20, 8, tzinfo=timezone.utc)


def test_cot_framer_cuts_back_to_back_events_and_refuses_garbage() -> None:
    framer = CotFramer(max_bytes=200)
    one = b'<?xml version="1.0"?>\n<event type="t-x-c-t" uid="x"><point lat="1" lon="1"/></event>'
    assert framer.feed(one + b"\n" + one[:30]) == [one]
    assert framer.feed(one[30:]) == [one]
    with pytest.raises(CotStreamError, match="oversize"):
        framer.feed(b"<event>" + b" " * 300)
    with pytest.raises(CotStreamError, match="garbage"):
        CotFramer().feed(b"\xbf\x01\xbf hello")
    assert parse_event(one).fix is None


# -- real clients -----------------------------------------------------------------
def test_osmand_get_post_and_traccar_json_with_curl(live: tuple[IngestProcess, dict], db_url: str) -> None:
    service, tokens = live
    now = int(time.time())
    lon, lat = CENTRE
    code, body = curl(f"{service.base}/?id=V1&lat={lat}&lon={lon}&timestamp={now - 60}&speed=10&bearing=90"
                      f"&altitude=120&accuracy=5&batt=80&token={tokens['V1']}")
    assert (code, body) == (200, "")
    code, _ = curl("-X", "POST", "-d", f"id=V1&lat={lat}&lon={lon + 0.0005}&timestamp={(now - 50) * 1000}"
                   f"&speed=4&bearing=80&accuracy=6&token={tokens['V1']}", f"{service.base}/")
    assert code == 200
    traccar = {"device_id": "V2", "token": tokens["V2"],
               "location": {"timestamp": datetime.fromtimestamp(now - 30, timezone.utc).isoformat(),
                            "coords": {"latitude": lat, "longitude": lon + 0.06, "speed": 5.0, "heading": 45,
                                       "accuracy": 8, "altitude": 100},
                            "battery": {"level": 0.8}}}
    code, _ = curl("-H", "Content-Type: application/json", "-d", json.dumps(traccar), f"{service.base}/")
    assert code == 200
    service.wait_drained()

    v1 = fixes_of(db_url, "V1")
    assert len(v1) == 2
    ts, speed, heading, accuracy, source, grid_id, zone_id, segment_id, border_m, x, y = v1[0]
    assert ts == datetime.fromtimestamp(now - 60, timezone.utc) and source == "osmand"
    assert speed == pytest.approx(18.52, abs=0.01) and heading == 90 and accuracy == 5
    assert (grid_id, zone_id, segment_id) == (1, 2, 1) and border_m == pytest.approx(11_070, rel=0.01)
    assert (x, y) == pytest.approx((lon, lat))
    assert fixes_of(db_url, "V2")[0][1] == pytest.approx(18.0) and fixes_of(db_url, "V2")[0][5] == 2
    latest = rows(db_url, "SELECT l.ts, l.grid_id FROM unit_latest l JOIN unit u ON u.id = l.unit_id "
                          "WHERE u.callsign = 'V1'")
    assert latest == [(datetime.fromtimestamp(now - 50, timezone.utc), 1)]


async def _send_with_pytak(port: int, events: list[bytes]) -> None:
    config = configparser.ConfigParser()
    config["ingest"] = {"COT_URL": f"tcp://127.0.0.1:{port}"}
    _, writer = await pytak.protocol_factory(config["ingest"])
    worker = pytak.TXWorker(asyncio.Queue(), config["ingest"], writer)
    for event in events:
        await worker.send_data(event)
    writer.close()


def test_cot_from_a_tak_client_library(live: tuple[IngestProcess, dict], db_url: str) -> None:
    service, tokens = live
    lon, lat = CENTRE
    events = [
        cot_event("C1", 40, lon, lat, token=tokens["C1"]),
        cot_event("C1", 30, lon + 0.0003, lat),
        cot_event("C1", 20, lon + 0.0006, lat, cot_type="b-m-p-s-p-i"),  # a map marker: not a position
        cot_event("V1", 10, lon, lat),  # another unit on C1's connection: refused
    ]
    asyncio.run(_send_with_pytak(service.cot_port, events))
    deadline = time.monotonic() + 10
    while len(fixes_of(db_url, "C1")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    c1 = fixes_of(db_url, "C1")
    assert [r[4] for r in c1] == ["cot", "cot"]
    assert c1[0][1] == pytest.approx(9.0) and c1[0][2] == 270 and c1[0][3] == 7
    stats = service.stats()
    assert stats["cot"]["ignored"] >= 1 and stats["unauthorized"] >= 1


_LOLS = '<!ENTITY lol0 "lol">' + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
BILLION_LAUGHS = (f'<?xml version="1.0"?><!DOCTYPE lolz [{_LOLS}]><event version="2.0" uid="C1" '
                  'type="a-f-G-U-C" time="&lol9;"><point lat="22.1" lon="100.05"/></event>').encode()
EXTERNAL_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                   b'<event version="2.0" uid="&xxe;" type="a-f-G-U-C"><point lat="22.1" lon="100.05"/></event>')


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (BILLION_LAUGHS, "hostile xml"),
        (EXTERNAL_ENTITY, "hostile xml"),
        (b'<event version="2.0" uid="C1" type="a-f-G-U-C"><detail><remarks>' + b"A" * (10 * 1024 * 1024), "oversize"),
        (b"\x00\x01GET / HTTP/1.0\r\n\r\n", "garbage"),
        (b'<event uid="C1"><point lat="22.1"></event>', "malformed xml"),
    ],
    ids=["billion-laughs", "external-entity", "10MB-event", "garbage", "malformed"],
)
def test_hostile_cot_is_dropped_and_service_keeps_serving(
    live: tuple[IngestProcess, dict], db_url: str, payload: bytes, key: str
) -> None:
    service, tokens = live
    before_rows = rows(db_url, "SELECT count(*) FROM position")[0][0]
    before = service.stats()["cot"]["dropped"].get(key, 0)
    with socket.create_connection(("127.0.0.1", service.cot_port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a reset is a close too
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""  # the server closed the connection
    deadline = time.monotonic() + 5
    while service.stats()["cot"]["dropped"].get(key, 0) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.stats()["cot"]["dropped"].get(key, 0) == before + 1
    assert rows(db_url, "SELECT count(*) FROM position")[0][0] == before_rows
    assert requests.get(f"{service.base}/api/ingest/stats", timeout=5).ok


# -- refusals ---------------------------------------------------------------------
def _query(token: str, **fields: object) -> str:
    params = {"id": "X1", "lat": CENTRE[1], "lon": CENTRE[0], "timestamp": int(time.time()) - 5, "token": token}
    params.update(fields)
    return "&".join(f"{k}={v}" for k, v in params.items() if v is not None)


@pytest.mark.parametrize(
    ("fields", "status", "reason", "counter"),
    [
        ({"lat": "abc"}, 400, "lat must be a number", "not a number"),
        ({"lat": None}, 400, "missing lat", "missing field"),
        ({"timestamp": "yesterday"}, 400, "neither Unix seconds nor ISO 8601", "bad time"),
        ({"lat": 95}, 400, "coordinates out of range", "coordinates out of range"),
        ({"lat": 0, "lon": 0}, 400, "coordinates at (0, 0)", "coordinates at (0, 0)"),
        ({"timestamp": int(time.time()) + 3600}, 400, "time in the future", "time in the future"),
        ({"accuracy": 5000}, 400, "accuracy 5000 m is outside", "bad accuracy"),
    ],
)
def test_bad_osmand_fix_is_refused_with_a_reason(
    live: tuple[IngestProcess, dict], db_url: str, fields: dict, status: int, reason: str, counter: str
) -> None:
    service, tokens = live
    before = service.stats()["rejected"].get(counter, 0)
    response = requests.get(f"{service.base}/?{_query(tokens['X1'], **fields)}", timeout=5)
    assert response.status_code == status and reason in response.text
    assert service.stats()["rejected"][counter] == before + 1
    time.sleep(0.3)
    assert fixes_of(db_url, "X1") == []


def test_bad_json_and_oversize_batches(live: tuple[IngestProcess, dict]) -> None:
    service, tokens = live
    auth = {"Authorization": f"Bearer {tokens['J1']}"}
    bad = requests.post(f"{service.base}/api/positions", data=b"{not json", headers=auth, timeout=5)
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    shape = requests.post(f"{service.base}/api/positions", json={"fixes": []}, headers=auth, timeout=5)
    assert shape.status_code == 400 and '{"positions"' in shape.json()["error"]
    big = requests.post(f"{service.base}/api/positions", data=b"x" * (3 * 1024 * 1024), headers=auth, timeout=10)
    assert big.status_code == 413
    traccar = requests.post(f"{service.base}/", data=b"[1, 2", headers={"Content-Type": "application/json"}, timeout=5)
    assert traccar.status_code == 400 and "not JSON" in traccar.text
    assert service.stats()["rejected"]["bad json"] >= 3


def test_batch_reports_each_fix(live: tuple[IngestProcess, dict], db_url: str) -> None:
    service, tokens = live
    now = time.time()
    lon, lat = CENTRE
    body = {"positions": [
        {"ts": now - 20, "lon": lon, "lat": lat, "speed_kmh": 12, "heading": 10, "accuracy_m": 4},
        {"callsign": "J1", "ts": datetime.fromtimestamp(now - 10, timezone.utc).isoformat(), "lon": lon + 0.0002,
         "lat": lat},
        {"ts": now + 3600, "lon": lon, "lat": lat},
        {"ts": now - 5, "lon": 200, "lat": lat},
        {"callsign": "V1", "ts": now - 5, "lon": lon, "lat": lat},  # another unit, J1's token: refused
    ]}
    response = requests.post(f"{service.base}/api/positions", json=body,
                             headers={"Authorization": f"Bearer {tokens['J1']}"}, timeout=5)
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 2
    assert [(r["index"], r["status"]) for r in result["rejected"]] == [(2, 400), (3, 400), (4, 403)]
    assert "time in the future" in result["rejected"][0]["reason"]
    service.wait_drained()
    assert [r[4] for r in fixes_of(db_url, "J1")] == ["json", "json"]
    refused = requests.post(f"{service.base}/api/positions", json={"positions": [{**body["positions"][0], "callsign": "J1"}]}, timeout=5)
    assert refused.status_code == 401


def test_unknown_device_and_wrong_token_are_refused(live: tuple[IngestProcess, dict], db_url: str) -> None:
    service, tokens = live
    before = service.stats()["unauthorized"]
    assert requests.get(f"{service.base}/?{_query('guess', id='NOPE')}", timeout=5).status_code == 403
    assert requests.get(f"{service.base}/?{_query(tokens['V1'])}", timeout=5).status_code == 403  # V1's token, X1
    assert requests.get(f"{service.base}/?{_query('')}", timeout=5).status_code == 401
    assert service.stats()["unauthorized"] == before + 3
    assert fixes_of(db_url, "X1") == [] and rows(db_url, "SELECT count(*) FROM unit WHERE callsign = 'NOPE'") == [(0,)]


def test_flood_from_one_device_is_rate_limited(live: tuple[IngestProcess, dict]) -> None:
    service, tokens = live
    base_ts = int(time.time()) - 400
    codes = []
    started = time.monotonic()
    with requests.Session() as session:
        for i in range(150):
            query = f"id=R1&lat={CENTRE[1]}&lon={CENTRE[0]}&timestamp={base_ts + i}&token={tokens['R1']}"
            codes.append(session.get(f"{service.base}/?{query}", timeout=5).status_code)
    elapsed = time.monotonic() - started
    assert set(codes) == {200, 429}
    assert 100 <= codes.count(200) <= 100 + 20 * elapsed + 1
    assert service.stats()["rate_limited"] == codes.count(429)


def test_writer_quarantines_impossible_speed_and_stores_repeats_once(
    live: tuple[IngestProcess, dict], db_url: str
) -> None:
    service, tokens = live
    now = int(time.time())
    lon, lat = CENTRE
    sent = [(now - 30, lon), (now - 29, lon + 0.01), (now - 20, lon + 0.0001), (now - 20, lon + 0.0001)]
    for ts, x in sent:  # the last one is a phone resending a fix it got no answer for
        query = f"id=F1&lat={lat}&lon={x}&timestamp={ts}&token={tokens['F1']}"
        assert requests.get(f"{service.base}/?{query}", timeout=5).status_code == 200
    stats = service.wait_drained()
    assert [r[0].timestamp() for r in fixes_of(db_url, "F1")] == [now - 30, now - 20]
    assert stats["writer_rejected"]["impossible speed"] >= 1 and stats["duplicates"] >= 1
    quarantined = rows(db_url, "SELECT record->>'callsign', reason FROM quarantine WHERE source = 'ingest'")
    assert ("F1", "impossible speed") in quarantined


# -- crashes ----------------------------------------------------------------------
STREAM_UNITS = {"K1": "vehicle", "K2": "vehicle", "K3": "vehicle"}
FAST = ("--rate", "1000", "--burst", "1000")  # the stream is faster than a phone: no flood limit here


class Stream(threading.Thread):
    """A client sending ``n`` OsmAnd fixes, retrying each until it is acknowledged (bounded)."""

    def __init__(self, service: IngestProcess, tokens: dict[str, str], n: int) -> None:
        super().__init__(daemon=True)
        self.service, self.tokens, self.n = service, tokens, n
        self.sent: set[tuple[str, int]] = set()
        self.acked: list[tuple[str, int]] = []
        self.failures = 0

    def run(self) -> None:
        callsigns = sorted(self.tokens)
        ts0 = int(time.time()) - self.n - 60
        with requests.Session() as session:
            for i in range(self.n):
                callsign = callsigns[i % len(callsigns)]
                fix = (callsign, ts0 + i)
                query = (f"id={callsign}&lat={CENTRE[1]}&lon={CENTRE[0] + 0.00005 * i:.6f}&timestamp={ts0 + i}"
                         f"&speed=20&token={self.tokens[callsign]}")
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    self.sent.add(fix)
                    try:
                        if session.get(f"{self.service.base}/?{query}", timeout=5).status_code == 200:
                            self.acked.append(fix)
                            break
                    except requests.RequestException:
                        self.failures += 1
                        time.sleep(0.05)
                time.sleep(0.003)

    def wait_for(self, acked: int) -> None:
        deadline = time.monotonic() + 30
        while len(self.acked) < acked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.acked) >= acked, "the stream stalled"


def stored(url: str) -> list[tuple[str, int]]:
    return [(c, int(ts.timestamp())) for c, ts in rows(
        url, "SELECT u.callsign, p.ts FROM position p JOIN unit u ON u.id = p.unit_id "
             "WHERE u.callsign = ANY(%s)", (list(STREAM_UNITS),))]


def assert_each_acknowledged_fix_once(url: str, stream: Stream) -> None:
    found = stored(url)
    assert len(found) == len(set(found)), "a fix is stored twice"
    missing = set(stream.acked) - set(found)
    assert not missing, f"{len(missing)} acknowledged fixes are not in position, e.g. {sorted(missing)[:3]}"
    assert set(found) <= stream.sent
    latest = rows(url, "SELECT u.callsign, l.ts FROM unit_latest l JOIN unit u ON u.id = l.unit_id "
                       "WHERE u.callsign = ANY(%s)", (list(STREAM_UNITS),))
    assert {c: int(ts.timestamp()) for c, ts in latest} == {c: max(t for u, t in found if u == c) for c in STREAM_UNITS}


def test_coverage_follows_a_live_fix_within_seconds(live: tuple[IngestProcess, dict], db_url: str) -> None:
    """The service's upkeep builds coverage; a new fix moves its grid's last visit at once."""
    service, tokens = live
    deadline = time.monotonic() + 60
    while rows(db_url, "SELECT count(*) FROM grid_coverage")[0][0] == 0:
        assert time.monotonic() < deadline, "the upkeep never built the coverage tables"
        time.sleep(0.5)
    fix_at = int(time.time()) - 1
    lon, lat = CENTRE
    code, _ = curl(f"{service.base}/?id=V1&lat={lat}&lon={lon}&timestamp={fix_at}&accuracy=5&token={tokens['V1']}")
    assert code == 200
    acknowledged = time.monotonic()
    expected = [(datetime.fromtimestamp(fix_at, timezone.utc), "fresh")]
    while rows(db_url, "SELECT last_visit, status FROM grid_coverage WHERE grid_id = 1") != expected:
        assert time.monotonic() - acknowledged < 5, rows(db_url, "SELECT * FROM grid_coverage WHERE grid_id = 1")
        time.sleep(0.1)


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, str]]:
    """A PostGIS server of the test's own (under /tmp, reachable by the postgres user), to kill."""
    home = tmp_path_factory.mktemp("dbhome")
    home.chmod(0o755)
    for parent in home.parents:
        if parent != Path("/") and parent.stat().st_mode & 0o001 == 0:
            parent.chmod(parent.stat().st_mode | 0o001)
    settings = Settings(home=home, database_url=None, db_port=None)
    server = EmbeddedServer(settings)
    ensure_database(settings).dispose()
    yield server, home
    server.stop()


def test_database_killed_mid_stream_loses_nothing(own_server: tuple[EmbeddedServer, Path]) -> None:
    server, home = own_server
    tokens = seed(server.url(), STREAM_UNITS)
    service = IngestProcess(None, home, *FAST).start()  # the embedded server of ``home``
    try:
        stream = Stream(service, tokens, 900)
        stream.start()
        stream.wait_for(200)
        os.kill(server.pid(), signal.SIGKILL)
        stream.wait_for(len(stream.acked) + 150)  # still acknowledged while the database is down
        down = service.stats()
        assert not down["db_up"] and down["writer"]["state"] == "retrying" and down["writer"]["last_error"]
        assert down["spool"]["backlog"] > 0 and down["writer"]["oldest_unstored_age_s"] >= 0
        server.start()  # after a crash it may come back on another port: the service must follow
        stream.join(120)
        assert not stream.is_alive() and len(stream.acked) == 900 and stream.failures == 0
        stats = service.wait_drained(timeout=60)
        assert stats["spooled"] == 900
        assert_each_acknowledged_fix_once(server.url(), stream)
    finally:
        service.stop()


def test_ingest_killed_and_restarted_loses_nothing(
    db_url: str, live: tuple[IngestProcess, dict], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tokens = seed(db_url, STREAM_UNITS, region=False)
    home = tmp_path_factory.mktemp("ingest-kill9")
    service = IngestProcess(db_url, home, *FAST).start()
    try:
        stream = Stream(service, tokens, 900)
        stream.start()
        stream.wait_for(250)
        service.kill()
        time.sleep(0.5)
        restarted = IngestProcess(db_url, home, *FAST)
        restarted.http_port, restarted.cot_port = service.http_port, service.cot_port
        service = restarted.start()
        stream.join(120)
        assert not stream.is_alive() and len(stream.acked) == 900 and stream.failures > 0
        service.wait_drained(timeout=60)
        assert_each_acknowledged_fix_once(db_url, stream)
        assert service.terminate() == 0  # SIGTERM: a clean stop
    finally:
        service.stop()
