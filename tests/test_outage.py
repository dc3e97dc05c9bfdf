"""The picture survives a database outage and heals by itself: the wall keeps every layer, marked with
the time it shows; a page opened during the outage shows the last picture (or says there is none);
the dashboard finds a restarted database again, on its port or a new one."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from _accounts import ORIGIN, cli_account, client_of, signed_opener
from sqlalchemy.engine import make_url

from gridwatch.bench._harness import callback_body, dependency_key, new_account
from gridwatch.dashboard._context import LastKnown, WallContext
from gridwatch.dashboard.access import callback_id
from gridwatch.dashboard.app import create_app
from gridwatch.dashboard.wall_data import live_update
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.settings import Settings, get_settings

from _browser import LIVE_LONS, READY, RENDERED, TcpProxy, offline_page, serving
from _homes import open_to_all
from _refdata import SQUARE, empty_tables

FAST = {"live_refresh_s": 1.0, "refresh_s": 2.0}
LAYERS = ["grids", "segments", "incidents", "checkpoints", "lines"]
BANNER = "() => document.querySelector('#wall-banner')?.textContent || ''"


@pytest.fixture(scope="module")
def region(engine: sa.Engine) -> sa.Engine:
    empty_tables(engine)
    make_region(engine, REGIONS["small"])
    return engine


@pytest.fixture(scope="module")
def proxy(db_url: str) -> TcpProxy:
    url = make_url(db_url)
    return TcpProxy(url.host or "127.0.0.1", url.port or 5432)


@pytest.fixture(scope="module")
def base(region: sa.Engine, proxy: TcpProxy, db_url: str):
    """The dashboard, reaching the database through the proxy, refreshing fast."""
    url = make_url(db_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = create_app(url, get_settings().model_copy(update=FAST))
    with serving(app.server) as address:
        yield address


def _drawn(page) -> dict[str, int]:
    return page.evaluate(RENDERED, LAYERS)


def _wait_drawn(page) -> None:
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_function(f"() => {{ const c = ({RENDERED})({json.dumps(LAYERS)}); "
                           "return Object.values(c).every(n => n > 0); }", timeout=30_000)
    page.wait_for_function(f"() => ({LIVE_LONS})().length > 0", timeout=30_000)


def test_the_wall_keeps_every_layer_through_an_outage(region: sa.Engine, base: str, proxy: TcpProxy) -> None:
    with offline_page(base, account=new_account(region)) as (page, watch):
        page.goto(f"{base}/wall")
        _wait_drawn(page)
        before = _drawn(page)
        units = len(page.evaluate(LIVE_LONS))
        proxy.cut()
        try:
            page.wait_for_function(f"() => ({BANNER})().includes('showing the picture of')", timeout=30_000)
            # live vector layers are fetched again at the next slow ticks: they come from the last picture
            kept = page.wait_for_event("response", lambda r: "/tiles/group/live/" in r.url and r.status == 200,
                                       timeout=30_000)
            assert kept.headers.get("x-gridwatch-as-of")
            page.wait_for_timeout(3 * FAST["refresh_s"] * 1000)
            during = _drawn(page)
            assert all(during[layer] > 0 for layer in LAYERS), (before, during)
            assert len(page.evaluate(LIVE_LONS)) == units
        finally:
            proxy.resume()
        page.wait_for_function(f"() => ({BANNER})() === ''", timeout=30_000)
        assert not watch.offsite


def test_a_page_opened_during_the_outage_shows_the_last_picture(region: sa.Engine, base: str, proxy: TcpProxy) -> None:
    with offline_page(base, account=new_account(region)) as (page, _):
        page.goto(f"{base}/wall")
        _wait_drawn(page)  # the server has seen the picture
        signed_in = page.context.storage_state()
    proxy.cut()
    try:
        with offline_page(base, account=signed_in) as (page, _):
            page.goto(f"{base}/wall")
            _wait_drawn(page)
            assert "showing the picture of" in page.evaluate(BANNER)
    finally:
        proxy.resume()


def test_a_server_that_never_saw_the_database_says_there_is_no_data_yet(region: sa.Engine, db_url: str) -> None:
    # A wall signed in before (its cookie holds for every port of this host): the session is trusted
    # as it stood while the database is away. (That app is set up first: a Dash app takes the pages'
    # callbacks when it serves its first request.)
    with serving(create_app(db_url).server) as other, offline_page(other, account=new_account(region)) as (page, _):
        signed_in = page.context.storage_state()
    url = make_url(db_url)
    cut = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    cut.cut()
    app = create_app(url.set(port=cut.port).render_as_string(hide_password=False),
                     get_settings().model_copy(update=FAST))
    with serving(app.server) as address, offline_page(address, account=signed_in) as (page, _):
        page.goto(f"{address}/wall")
        page.wait_for_function(f"() => ({BANNER})().includes('No data yet — the database is unreachable')",
                               timeout=30_000)
        cut.resume()
        _wait_drawn(page)
        page.wait_for_function(f"() => ({BANNER})() === ''", timeout=30_000)


def test_no_callback_fails_on_a_database_that_went_away(region: sa.Engine, db_url: str, caplog) -> None:
    """Every server callback, asked while the database is cut, answers without a 500 or a logged
    traceback (the data it reads falls back to the last known picture)."""
    url = make_url(db_url)
    cut = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    app = create_app(url.set(port=cut.port).render_as_string(hide_password=False))
    client = client_of(app, new_account(region, "admin"))
    for page in ("/wall", "/dispatch", "/plan"):
        client.get(page)
    names = {callback_id(e["callback"]) for e in app.callback_map.values() if "callback" in e}
    languages = {dependency_key(d): "en" for e in app.callback_map.values() if "callback" in e
                 for d in e["state"] if d["id"].endswith("-lang")}
    cut.cut()
    try:
        for name in sorted(names):
            response = client.post("/_dash-update-component", json=callback_body(app, name, languages),
                                   headers={"Origin": ORIGIN})
            assert response.status_code < 500, (name, response.status_code)
    finally:
        cut.resume()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text[:2000]


def test_the_last_known_answer_is_kept_within_its_bound() -> None:
    known = LastKnown(max_bytes=10)
    assert known.read("a", lambda: b"12345").fresh
    known.read("b", lambda: b"67890")
    known.read("c", lambda: b"abc")  # over 10 bytes: "a", the least recently used, goes

    def down() -> bytes:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    kept = known.read("b", down)
    assert (kept.value, kept.fresh) == (b"67890", False)
    with pytest.raises(sa.exc.OperationalError, match="connection refused"):
        known.read("a", down)


@pytest.mark.parametrize(("state", "backlog", "age_s", "expected"), [
    ("retrying", 120, 5, "Live positions not stored since"),
    ("storing", 40, 90, "Live positions not stored since"),
    ("storing", 0, 0, ""),
    ("stopped", 0, 0, ""),
])
def test_the_banner_says_when_live_fixes_are_not_stored(
    region: sa.Engine, state: str, backlog: int, age_s: float, expected: str
) -> None:
    now = datetime.now(timezone.utc)
    with region.begin() as conn:
        conn.execute(sa.text("DELETE FROM ingest_status"))
        conn.execute(sa.text("UPDATE unit_latest SET ts = now()"))
        conn.execute(sa.text(
            "INSERT INTO ingest_status (spool_id, state, backlog, oldest_unstored_at, last_stored_at, last_error) "
            "VALUES ('s1', :state, :backlog, :oldest, :now, :error)"),
            {"state": state, "backlog": backlog, "now": now, "error": "disk full" if state == "retrying" else None,
             "oldest": now - timedelta(seconds=age_s) if backlog else None})
    try:
        text, _ = live_update(WallContext(region, Settings()), None, lang="en").banner
    finally:
        with region.begin() as conn:
            conn.execute(sa.text("DELETE FROM ingest_status"))
    assert text.startswith(expected) if expected else text == ""
    if state == "retrying":
        assert "120 waiting (disk full)" in text


def test_the_banner_says_when_the_ingest_service_went_silent(region: sa.Engine) -> None:
    with region.begin() as conn:
        conn.execute(sa.text("UPDATE unit_latest SET ts = now()"))
        conn.execute(sa.text("INSERT INTO ingest_status (spool_id, state, updated_at) "
                             "VALUES ('s2', 'storing', now() - interval '5 minutes')"))
    try:
        text, _ = live_update(WallContext(region, Settings()), None, lang="en").banner
    finally:
        with region.begin() as conn:
            conn.execute(sa.text("DELETE FROM ingest_status"))
    assert text.startswith("Live feed silent since")


# -- a real restart of the embedded database, with `gridwatch serve` running ---------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answer(opener: urllib.request.OpenerDirector, url: str) -> str:
    """``fresh`` (200, read now), ``kept`` (200, the last known answer) or the error."""
    try:
        with opener.open(url, timeout=5) as response:
            return "kept" if response.headers.get("X-Gridwatch-As-Of") else "fresh"
    except urllib.error.HTTPError as error:
        return str(error.code)
    except OSError as error:
        return type(error).__name__


def _until(opener: urllib.request.OpenerDirector, url: str, wanted: str, cap_s: float = 60.0) -> None:
    deadline = time.monotonic() + cap_s
    while (answer := _answer(opener, url)) != wanted:
        assert time.monotonic() < deadline, f"{url} answered {answer}, never {wanted}"
        time.sleep(0.5)


def test_serve_finds_the_database_again_on_a_new_port(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = open_to_all(tmp_path_factory.mktemp("restart-home"), 0o777)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}, "GRIDWATCH_HOME": str(home)}
    gridwatch = [sys.executable, "-m", "gridwatch.cli"]
    assert subprocess.run([*gridwatch, "db", "start"], env=env, capture_output=True, timeout=120).returncode == 0
    url = subprocess.run([*gridwatch, "db", "url"], env=env, capture_output=True, text=True).stdout.strip()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO command_unit (level, code, name, geom) VALUES "
                     f"('prefecture', 'P', 'Pref', ST_GeomFromText('{SQUARE}', 4326))")
    account = cli_account(gridwatch, env)
    port = _free_port()
    serve = subprocess.Popen([*gridwatch, "serve", "--port", str(port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live = f"http://127.0.0.1:{port}/api/live"
    try:
        opener = signed_opener(f"http://127.0.0.1:{port}", account)
        _until(opener, live, "fresh")
        old = subprocess.run([*gridwatch, "db", "url"], env=env, capture_output=True, text=True).stdout.strip()
        subprocess.run([*gridwatch, "db", "stop"], env=env, capture_output=True, timeout=60)
        _until(opener, live, "kept")  # the last known units while the database is away
        moved = subprocess.run([*gridwatch, "db", "start"], env={**env, "GRIDWATCH_DB_PORT": str(_free_port())},
                               capture_output=True, text=True, timeout=120)
        assert moved.returncode == 0, moved.stderr
        new = subprocess.run([*gridwatch, "db", "url"], env=env, capture_output=True, text=True).stdout.strip()
        assert make_url(new).port != make_url(old).port
        _until(opener, live, "fresh")  # the same serve process, with no restart
    finally:
        serve.terminate()
        serve.wait(30)
        subprocess.run([*gridwatch, "db", "stop"], env=env, capture_output=True, timeout=60)
