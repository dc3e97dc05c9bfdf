"""The wall in headless Chromium, offline: every layer drawn, toggles, drill-down, live units, banners.

The app is served on a free localhost port against the test database (through
a TCP proxy the outage test cuts), filled with the small synthetic region.
Any request to another origin fails the test.
"""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gridwatch.bench._harness import new_account
from gridwatch.dashboard.app import create_app
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.layers.catalog import available_layers
from gridwatch.layers.glyphs import glyphs_available
from gridwatch.layers.queries import command_unit, jurisdiction_bounds, kpis
from gridwatch.settings import get_settings

from _browser import LIVE_LONS, MAP, READY, RENDERED, TcpProxy, offline_page, serving
from _refdata import empty_tables

pytestmark = pytest.mark.browser

VISIBILITY = f"(id) => {MAP}.getLayoutProperty(id, 'visibility')"


@pytest.fixture(scope="module")
def region(engine):
    empty_tables(engine)
    make_region(engine, REGIONS["small"])
    with engine.begin() as conn:
        if conn.exec_driver_sql("SELECT to_regclass('leak_route') IS NOT NULL").scalar():
            conn.exec_driver_sql("TRUNCATE leak_route")
            conn.exec_driver_sql("INSERT INTO leak_route (line_no, length_m, geom) SELECT 2, "
                                 "ST_Length(geom::geography), geom FROM road WHERE class = 'track'")
    return engine


@pytest.fixture(scope="module")
def proxy(db_url):
    url = make_url(db_url)
    return TcpProxy(url.host or "127.0.0.1", url.port or 5432)


@pytest.fixture(scope="module")
def wall(region, proxy, db_url):
    """The wall page, loaded and fitted to the region; yields (page, watch, base URL)."""
    url = make_url(db_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = create_app(url)
    with serving(app.server) as base, offline_page(base, account=new_account(region)) as (page, watch):
        page.goto(f"{base}/wall")
        page.wait_for_function(READY, timeout=60_000)
        yield page, watch, base
    assert not watch.offsite, f"requests to other origins: {watch.offsite}"
    assert not watch.csp_violations, "\n".join(watch.csp_violations)


def banner_text(page) -> str:
    return page.locator("#wall-banner").inner_text().strip()


def test_map_draws_every_layer_offline(wall, region, artifacts):
    page, watch, _ = wall
    page.wait_for_function(f"() => ({LIVE_LONS})().length > 0", timeout=15_000)
    time.sleep(2)  # let labels and the first live update settle
    page.wait_for_function(READY)
    page.screenshot(path=str(artifacts / "wall.png"))
    hidden_tiles = [url for url in watch.requests if "/tiles/group/live_hidden/" in url]
    assert not hidden_tiles, f"tiles of layers the wall opens hidden were fetched: {hidden_tiles}"
    page.locator("#wall-layers label", has_text="H3 coverage").click()
    page.wait_for_function(f"() => {MAP}.getLayoutProperty('hexes-fill', 'visibility') === 'visible'")
    page.wait_for_function(READY)
    assert any("/tiles/group/live_hidden/" in url for url in watch.requests)
    ids = [layer.id for layer in available_layers(region) if layer.styles or glyphs_available()]
    counts = page.evaluate(RENDERED, ids)
    assert not [i for i in ids if counts[i] == 0], counts
    assert not watch.offsite, watch.offsite
    assert not watch.console_errors, watch.console_errors
    assert page.locator("#wall-kpis .kpi").count() == 6
    assert banner_text(page) == ""


def test_toggle_hides_and_shows_a_layer(wall):
    page, _, _ = wall
    toggle = page.locator("#wall-layers label", has_text="Grids by coverage")
    toggle.click()
    page.wait_for_function("() => " + MAP + ".getLayoutProperty('grids-fill', 'visibility') === 'none'")
    page.wait_for_function(f"() => ({RENDERED})(['grids']).grids === 0")
    toggle.click()
    page.wait_for_function("() => " + MAP + ".getLayoutProperty('grids-fill', 'visibility') === 'visible'")
    page.wait_for_function(f"() => ({RENDERED})(['grids']).grids > 0")


def test_live_unit_moves_when_unit_latest_changes(wall, region):
    page, _, _ = wall
    with region.begin() as conn:
        conn.execute(sa.text("UPDATE unit_latest SET geom = ST_SetSRID(ST_MakePoint(98.12345, 23.654321), 4326), "
                             "ts = now() WHERE unit_id = 1"))
    page.wait_for_function(f"() => ({LIVE_LONS})().some(v => Math.abs(v - 98.12345) < 1e-6)", timeout=15_000)


def test_wall_runs_under_the_security_policy(wall, region):
    """The wall loads, draws every tile and moves a unit under its CSP: no violation, no console error."""
    page, watch, base = wall
    response = page.goto(f"{base}/wall")
    policy = response.headers["content-security-policy"]
    assert "'unsafe-eval'" not in policy and "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_function(f"() => ({RENDERED})(['grids']).grids > 0")
    with region.begin() as conn:
        conn.execute(sa.text("UPDATE unit_latest SET geom = ST_SetSRID(ST_MakePoint(98.13579, 23.64), 4326), "
                             "ts = now() WHERE unit_id = 2"))
    page.wait_for_function(f"() => ({LIVE_LONS})().some(v => Math.abs(v - 98.13579) < 1e-6)", timeout=15_000)
    assert not watch.csp_violations, "\n".join(watch.csp_violations)
    assert not watch.console_errors, "\n".join(watch.console_errors)
    # the policy is enforced and its violations reach the test: an injected inline script and a
    # string handed to setTimeout (an eval) are refused and reported
    page.evaluate("""() => {
        const s = document.createElement('script');
        s.textContent = 'window.gridwatchInlineRan = true';
        document.head.appendChild(s);
        setTimeout('window.gridwatchEvalRan = true', 0);
    }""")
    page.wait_for_timeout(500)
    assert page.evaluate("() => [window.gridwatchInlineRan, window.gridwatchEvalRan]") == [None, None]
    directives = sorted(v.split(" ", 1)[0] for v in watch.csp_violations)
    assert directives == ["script-src", "script-src-elem"], watch.csp_violations
    watch.csp_violations.clear()
    watch.console_errors.clear()


def test_drill_down_fits_and_filters(wall, region):
    page, _, base = wall
    county = command_unit(region, "C2")
    expected = kpis(region, get_settings(), scope=county.id)
    page.goto(f"{base}/wall?unit=C2")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function(
        "(b) => { const m = " + MAP + "; const v = m.getBounds();"
        " return v.getWest() <= b[0] + 1e-6 && v.getSouth() <= b[1] + 1e-6 && v.getEast() >= b[2] - 1e-6"
        " && v.getNorth() >= b[3] - 1e-6 && (v.getNorth() - v.getSouth()) < 2 * (b[3] - b[1]); }",
        arg=list(county.bounds), timeout=15_000)
    units = str(expected.units_on_duty + expected.units_responding + expected.units_silent)
    page.wait_for_function("(n) => document.querySelector('#wall-kpis .kpi-value')?.textContent === n", arg=units)
    assert "unit=C2" in page.url
    assert page.locator("#wall-scope").inner_text().find("Baihe County") >= 0


def test_the_page_opens_fitted_and_its_first_fit_redraws_nothing(wall, region):
    """The server opens the map on the region as a 1920 x 1080 wall shows it: the page's own fit,
    once the bounds arrive, then sends the figure no Patch (which makes plotly redraw every trace)."""
    page, _, base = wall
    page.goto(f"{base}/wall")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#wall-kpis .kpi').length === 6")  # the bounds came too
    time.sleep(1)  # the fit, a clientside callback, runs after them
    shown = page.evaluate("() => { const b = " + MAP + ".getBounds(); "
                          "return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; }")
    west, south, east, north = jurisdiction_bounds(region)
    assert shown[0] <= west and shown[1] <= south and shown[2] >= east and shown[3] >= north, shown
    assert (shown[3] - shown[1]) < 1.5 * (north - south)
    assert page.evaluate("() => document.querySelector('#wall-map .js-plotly-plot').layout.uirevision") == "wall"


def test_chinese_wall(wall, artifacts):
    page, watch, base = wall
    page.goto(f"{base}/wall?lang=zh")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#wall-kpis .kpi').length === 6")
    assert "指挥大屏" in page.locator("h1").inner_text()
    assert "警力" in page.locator("#wall-kpis").inner_text()
    page.screenshot(path=str(artifacts / "wall-zh.png"))
    assert not watch.console_errors, watch.console_errors


def test_database_down_banner_recovers(wall, region, proxy):
    page, _, _ = wall
    proxy.cut()
    try:
        page.wait_for_function("() => document.querySelector('#wall-banner')?.textContent.includes('数据库无法连接')",
                               timeout=20_000)
    finally:
        proxy.resume()
    page.wait_for_function("() => document.querySelector('#wall-banner')?.classList.contains('hidden')",
                           timeout=20_000)
    _assert_live_units_follow(page, region, 98.2468)


def _assert_live_units_follow(page, region, lon: float) -> None:
    """Unit 1 moved to ``lon`` in the database shows there on the map within a few live ticks."""
    with region.begin() as conn:
        conn.execute(sa.text("UPDATE unit_latest SET geom = ST_SetSRID(ST_MakePoint(:lon, 23.6), 4326), ts = now() "
                             "WHERE unit_id = 1"), {"lon": lon})
    page.wait_for_function(f"(x) => ({LIVE_LONS})().some(v => Math.abs(v - x) < 1e-6)", arg=lon, timeout=20_000)


def test_stale_then_empty_banners(wall, region):
    page, _, base = wall
    page.goto(f"{base}/wall")
    with region.begin() as conn:
        conn.execute(sa.text("UPDATE unit_latest SET ts = now() - interval '2 hours'"))
    page.wait_for_function("() => document.querySelector('#wall-banner')?.textContent.includes('Data stale since')",
                           timeout=20_000)
    with region.begin() as conn:
        conn.execute(sa.text("DELETE FROM unit_latest"))
    page.wait_for_function("() => document.querySelector('#wall-banner')?.textContent.includes('No data yet')",
                           timeout=20_000)


# -- the wall's plain functions ------------------------------------------------------------------
def test_live_traces_keep_order_and_separate_trails():
    import pandas as pd

    from gridwatch.dashboard.live_map import HALO_COLOURS, KIND_COLOURS, SILENT_COLOUR, TRACES, live_traces

    units = pd.DataFrame({
        "unit_id": [1, 2], "callsign": ["A1", "B2"], "kind": ["foot", "drone"], "status": ["on_duty", "responding"],
        "lon": [100.0, 101.0], "lat": [20.0, 21.0], "heading": [90.0, None], "speed": [1.0, 2.0],
        "ts": pd.to_datetime(["2024-05-01T00:00:00Z", "2024-05-01T00:00:05Z"]), "silent": [False, True],
    })
    trail = pd.DataFrame({"unit_id": [1, 1, 2, 2], "lon": [99.9, 100.0, 100.9, 101.0], "lat": [20, 20, 21, 21]})
    traces = live_traces(units, trail, lang="en", timezone="Asia/Shanghai", found="B2",
                         now=pd.Timestamp("2024-05-01T00:02:00Z"))
    assert [t["name"] for t in traces] == list(TRACES)
    assert traces[0]["lon"] == [99.9, 100.0, None, 100.9, 101.0]
    assert traces[1]["lon"][0] == 100.0 and traces[1]["lon"][1] > 100.0 and len(traces[1]["lon"]) == 3
    halo, found, marks = traces[2], traces[3], traces[4]
    assert halo["lon"] == [101.0] and halo["marker"]["color"] == [HALO_COLOURS["silent"]]  # silent wins
    assert found["lon"] == [101.0] and found["lat"] == [21.0]  # the callsign searched for
    assert marks["lon"] == [100.0, 101.0] and marks["marker"]["color"] == [KIND_COLOURS["foot"], SILENT_COLOUR]
    assert marks["customdata"] == [["A1", "foot"], ["B2", "silent"]]
    # callsign, kind, status (silent wins), speed, the fix's age and its time in Asia/Shanghai
    assert marks["text"] == ["A1 · foot patrol<br>on duty · 1 km/h · fix 2 min ago (08:00:00)",
                             "B2 · drone<br>silent · 2 km/h · fix 1 min ago (08:00:05)"]
    zh = live_traces(units, None, lang="zh", timezone="Asia/Shanghai", now=pd.Timestamp("2024-05-01T03:00:30Z"))
    assert zh[-1]["text"][0] == "A1 · 徒步巡逻<br>在岗 · 1 公里/时 · 3小时前定位 (08:00:00)"
    assert zh[3]["lon"] == []  # nothing searched: no ring


def test_banners_and_options_in_both_languages():
    import pandas as pd

    from gridwatch.dashboard.wall_panels import banner, scope_options

    assert banner(None, lang="en") == ("", "banner hidden")
    assert banner("db", lang="zh")[0] == "数据库无法连接 — 正在重试"
    assert banner("stale", lang="en", since="2024-05-01 08:00:00")[0] == "Data stale since 2024-05-01 08:00:00"
    tree = pd.DataFrame({"code": ["P", "C"], "name": ["地区", "县"], "name_en": ["Pref", "County"],
                         "level": ["prefecture", "county"], "depth": [0, 1]})
    assert scope_options(tree, lang="en", within="C") == [{"label": "\u2003County · county", "value": "C"}]
    assert scope_options(tree, lang="zh", within=None) == [{"label": "地区 · 地区", "value": "P"},
                                              {"label": "\u2003县 · 县", "value": "C"}]
