"""The dispatcher's desk: the gap list, its ranking by urgency and its filters, the whole situation at
steps of a window (plain functions), then the page in headless Chromium, offline: gap list order, fitting
the map to a gap, its nearest unit and the route, acknowledging one alert or one group (also while the list
refreshes), the time slider, the replay and its empty state.
"""
from __future__ import annotations

import json
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from plotly.utils import PlotlyJSONEncoder

from gridwatch.bench._harness import new_account
from gridwatch.dashboard._context import WallContext
from gridwatch.dashboard.app import create_app
from gridwatch.dashboard.dispatch_panels import target_table
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.layers.gaps import gap_list, open_incidents
from gridwatch.layers.replay import positions_at, situation, track
from gridwatch.settings import Settings, get_settings

from _browser import offline_page, ready, serving
from _refdata import empty_tables, seed_region

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def run(engine: sa.Engine, script: str) -> None:
    """Execute the statements of ``script`` with ``:now`` bound to :data:`NOW`."""
    with engine.begin() as conn:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(sa.text(statement), {"now": NOW})


# -- the gap list ---------------------------------------------------------------------------------
@pytest.fixture
def tiny(clean_db):
    seed_region(clean_db)
    run(clean_db, """
            INSERT INTO segment_coverage (segment_id, last_visit, watched, limit_h, status) VALUES
              (1, CAST(:now AS timestamptz) - interval '5 hours', false, 4, 'overdue'),
              (2, NULL, false, 4, 'overdue');
            INSERT INTO grid_coverage (grid_id, last_visit, limit_h, status) VALUES
              (1, CAST(:now AS timestamptz) - interval '30 hours', 24, 'overdue'),
              (2, CAST(:now AS timestamptz) - interval '13 hours', 24, 'due');
            INSERT INTO command_unit (id, level, parent_id, code, name, geom) VALUES
              (5, 'station', 3, 'EAST', 'East', ST_Multi(ST_MakeEnvelope(100.1, 22, 100.2, 22.2, 4326)))""")
    return clean_db


def test_gaps_most_urgent_first_unvisited_on_top(tiny):
    gaps = gap_list(tiny, Settings(), now=NOW)
    assert gaps["key"].tolist() == ["segment:2", "segment:1", "grid:1", "grid:2"]
    assert gaps["status"].tolist() == ["overdue", "overdue", "overdue", "due"]
    # no visit in the 48 h look-back window: overdue by at least 48 - 4 h
    assert gaps["overdue_s"].iloc[:3].tolist() == [44 * 3600, 3600, 6 * 3600]
    assert gaps.loc[0, "zone_kind"] == "border_closed" and gaps.loc[2, "zone_kind"] == "social_surface"


def test_gaps_filtered_by_command_unit_and_zone_kind(tiny):
    assert gap_list(tiny, Settings(), now=NOW, unit="EAST")["key"].tolist() == ["segment:2", "grid:2"]
    assert gap_list(tiny, Settings(), now=NOW, zone_kind="social_surface")["key"].tolist() == ["grid:1", "grid:2"]
    assert gap_list(tiny, Settings(), now=NOW, unit="NOWHERE").empty
    with pytest.raises(ValueError, match="`zone_kind` was 'sea'"):
        gap_list(tiny, Settings(), now=NOW, zone_kind="sea")


def test_a_watched_segment_is_no_gap_and_a_fresh_grid_neither(tiny):
    run(tiny, "UPDATE segment_coverage SET watched = true WHERE segment_id = 2; "
              "UPDATE grid_coverage SET last_visit = CAST(:now AS timestamptz) WHERE grid_id = 2")
    assert gap_list(tiny, Settings(), now=NOW)["key"].tolist() == ["segment:1", "grid:1"]


@pytest.fixture
def ranked(clean_db):
    """Hand-made places, each with a chosen last visit and limit (urgency = (now - visit - limit) / limit)."""
    seed_region(clean_db)
    run(clean_db, """
            INSERT INTO grid (id, code, township_id, geom) VALUES
              (3, 'G-S', 3, ST_Multi(ST_MakeEnvelope(100.05, 22.0, 100.06, 22.01, 4326))),
              (4, 'G-4', 3, ST_Multi(ST_MakeEnvelope(100.06, 22.1, 100.07, 22.11, 4326))),
              (5, 'G-5', 3, ST_Multi(ST_MakeEnvelope(100.07, 22.1, 100.08, 22.11, 4326)));
            INSERT INTO segment_coverage (segment_id, last_visit, watched, limit_h, status) VALUES
              (1, CAST(:now AS timestamptz) - interval '6 hours', false, 4, 'overdue');
            INSERT INTO grid_coverage (grid_id, last_visit, limit_h, status) VALUES
              (1, CAST(:now AS timestamptz) - interval '36 hours', 24, 'overdue'),
              (2, CAST(:now AS timestamptz) - interval '13 hours', 24, 'due'),
              (3, CAST(:now AS timestamptz) - interval '6 hours', 4, 'overdue'),
              (4, CAST(:now AS timestamptz) - interval '32 hours', 24, 'overdue')""")
    return clean_db


def test_gaps_ranked_by_how_far_past_the_limit_relative_to_it(ranked):
    gaps = gap_list(ranked, Settings(), now=NOW).set_index("key")
    assert gaps.index.tolist() == [
        "segment:2",  # no coverage row: no visit in 48 h, (48 - 4) / 4 = 11
        "grid:5",     # no coverage row, social surface: (48 - 24) / 24 = 1
        "grid:3",     # 2 h past 4 h in the border_closed zone: 0.5, border first at equal urgency
        "segment:1",  # 2 h past 4 h: 0.5
        "grid:1",     # 12 h past 24 h: 0.5, social surface
        "grid:4",     # 8 h past 24 h: longer overdue than segment 1, yet less urgent (1/3)
        "grid:2",     # 13 h of 24 h: due
    ]
    assert gaps["urgency"].iloc[:6].round(3).tolist() == [11, 1, 0.5, 0.5, 0.5, 0.333]
    assert gaps.loc["grid:3", "zone_kind"] == "border_closed" and gaps.loc["grid:1", "zone_kind"] == "social_surface"
    assert gaps["last_visit"].isna().tolist() == [True, True, False, False, False, False, False]


def test_a_longer_look_back_window_ranks_unvisited_places_higher(ranked):
    gaps = gap_list(ranked, Settings(coverage_lookback_h=96), now=NOW).set_index("key")
    assert gaps.loc["grid:5", "urgency"] == 3 and gaps.loc["segment:2", "urgency"] == 23
    with pytest.raises(ValueError, match="coverage_lookback_h was 30.0 but must be at least"):
        Settings(coverage_lookback_h=30, coverage_limit_h={"social_surface": 36})


@pytest.mark.parametrize("lang, unvisited, since", [("en", "> 44 h 00 min", "no visit since 04-29 20:00"),
                                                    ("zh", "超过44小时00分", "04-29 20:00 以来未巡")])
def test_gap_list_reads_no_visit_since_the_window_start_never_a_bare_never(ranked, lang, unvisited, since):
    frame = gap_list(ranked, Settings(), now=NOW)
    table = json.dumps(target_table(frame, mode="gaps", lang=lang, timezone="Asia/Shanghai", now=NOW,
                                    lookback_h=48), cls=PlotlyJSONEncoder)
    assert table.count(json.dumps(unvisited)[1:-1]) == 1 and table.count(json.dumps(since)[1:-1]) == 2
    assert '"never"' not in table and "\\u2014" not in table


def test_positions_at_and_track_read_the_past(tiny):
    run(tiny, """
            SELECT ensure_position_partitions(CAST(:now AS timestamptz) - interval '3 hours', CAST(:now AS timestamptz));
            INSERT INTO position (unit_id, ts, geom, source)
            SELECT 1, CAST(:now AS timestamptz) - make_interval(mins => m), ST_SetSRID(ST_MakePoint(100 + m / 1000.0, 22.1), 4326), 't'
            FROM generate_series(0, 120) m""")
    at = positions_at(tiny, Settings(), NOW - timedelta(minutes=30))
    assert at["callsign"].tolist() == ["F1"] and at["lon"].iloc[0] == pytest.approx(100.03)
    fixes = track(tiny, 1, start=NOW - timedelta(hours=1), end=NOW, max_points=20)
    assert len(fixes) <= 21 and fixes["lon"].iloc[0] == pytest.approx(100.06) and fixes["lon"].iloc[-1] == 100.0
    assert fixes["ts"].is_monotonic_increasing


def test_situation_plays_every_unit_at_steps_across_the_window(tiny):
    run(tiny, """
            SELECT ensure_position_partitions(CAST(:now AS timestamptz) - interval '3 hours',
                                              CAST(:now AS timestamptz));
            INSERT INTO unit (id, callsign, kind, command_unit_id, status) VALUES (3, 'OFF', 'drone', 4, 'off_duty');
            INSERT INTO position (unit_id, ts, geom, source)
            SELECT 1, CAST(:now AS timestamptz) - make_interval(mins => m),
                   ST_SetSRID(ST_MakePoint(100 + m / 1000.0, 22.1), 4326), 't'
            FROM generate_series(0, 120) m;
            INSERT INTO position (unit_id, ts, geom, source)
            SELECT u, CAST(:now AS timestamptz) - make_interval(mins => m),
                   ST_SetSRID(ST_MakePoint(100.1, 22 + m / 1000.0), 4326), 't'
            FROM generate_series(40, 60) m, (VALUES (2), (3)) v(u)""")
    settings = Settings(unit_silent_after_s=300)
    frames = situation(tiny, settings, start=NOW - timedelta(hours=1), end=NOW, steps=6)
    assert frames["step"].unique().tolist() == list(range(7))
    f1 = frames[frames["callsign"] == "F1"]  # every step, where it was then
    assert f1["lon"].tolist() == pytest.approx([100 + (60 - 10 * k) / 1000 for k in range(7)])
    assert (f1["at"] == [NOW - timedelta(minutes=60 - 10 * k) for k in range(7)]).all()
    v1 = frames[frames["callsign"] == "V1"]  # reported until 40 min ago, then silent: out of the picture
    assert v1["step"].tolist() == [0, 1, 2] and v1["lat"].tolist() == pytest.approx([22.06, 22.05, 22.04])
    assert "OFF" not in frames["callsign"].tolist()  # off duty
    assert frames.groupby("step")["unit_id"].apply(list).tolist()[:3] == [[1, 2]] * 3
    assert situation(tiny, settings, start=NOW - timedelta(hours=10), end=NOW - timedelta(hours=9)).empty
    assert situation(tiny, settings, start=NOW - timedelta(hours=1), end=NOW, scope=999).empty


# -- the page in a browser ------------------------------------------------------------------------

MAP = "window.gridwatch.mapOf('dispatch-map')"
READY = ready(MAP)
DATA = "document.querySelector('#dispatch-map .js-plotly-plot').data"
ROW_KEYS = """() => [...document.querySelectorAll('#dispatch-targets tr.pick')].map(r => r.dataset.key)"""


@pytest.fixture(scope="module")
def region(engine):
    empty_tables(engine)
    make_region(engine, REGIONS["small"])
    return engine


@pytest.fixture(scope="module")
def desk_app(db_url):
    return create_app(db_url)


@pytest.fixture(scope="module")
def desk(region, desk_app):
    """The dispatch page, loaded and fitted to the region; yields (page, watch, base URL)."""
    app = desk_app
    account = new_account(region, "dispatcher")
    with serving(app.server) as base, offline_page(base, account=account, viewport=(1680, 1000)) as (page, watch):
        page.goto(f"{base}/dispatch")
        page.wait_for_function(READY, timeout=60_000)
        yield page, watch, base
    assert not watch.offsite, f"requests to other origins: {watch.offsite}"
    assert not watch.csp_violations, "\n".join(watch.csp_violations)


@pytest.mark.browser
def test_page_loads_with_gaps_ranked_by_urgency(desk, region):
    page, watch, _ = desk
    page.wait_for_function(f"() => ({ROW_KEYS})().length > 0", timeout=20_000)
    expected = gap_list(region, get_settings(), now=datetime.now(timezone.utc))
    shown = page.evaluate(ROW_KEYS)
    assert len(shown) == len(expected)
    assert shown[:50] == expected["key"].tolist()[:50]  # further down, seconds of drift may swap near-ties
    overdue = expected[expected["status"] == "overdue"]
    assert len(overdue) and (expected["status"].iloc[:len(overdue)] == "overdue").all()
    assert expected["urgency"].is_monotonic_decreasing
    page.wait_for_selector("#dispatch-alerts .alert", timeout=20_000)
    assert not watch.console_errors, "\n".join(watch.console_errors)


@pytest.mark.browser
def test_desk_runs_under_the_security_policy(desk, region):
    """The desk loads, draws, lists gaps and moves its units in time under its CSP: no violation, no error."""
    page, watch, base = desk
    response = page.goto(f"{base}/dispatch")
    policy = response.headers["content-security-policy"]
    assert "'unsafe-eval'" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_function(f"() => ({ROW_KEYS})().length > 0", timeout=20_000)
    page.wait_for_function(f"() => {DATA}[0].lon.length > 0", timeout=15_000)
    now_lons = page.evaluate(f"() => {DATA}[0].lon")
    page.locator("#dispatch-time [role=slider]").focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"(before) => JSON.stringify({DATA}[0].lon) !== JSON.stringify(before)", arg=now_lons,
                           timeout=10_000)
    page.locator("#dispatch-time [role=slider]").focus()
    page.keyboard.press("End")  # back to now, for the tests that follow
    page.wait_for_function(READY, timeout=30_000)
    assert not watch.csp_violations, "\n".join(watch.csp_violations)
    assert not watch.console_errors, "\n".join(watch.console_errors)


@pytest.mark.browser
def test_clicking_a_gap_lists_units_and_fits_the_gap_the_unit_and_the_route(desk, region, artifacts):
    page, watch, _ = desk
    gaps = gap_list(region, get_settings(), now=datetime.now(timezone.utc))
    gap = gaps[gaps["kind"] == "grid"].iloc[-1]  # far down the list, away from the start view
    row = page.locator(f"#dispatch-targets tr.pick:nth-child({gap.name + 1})")
    label = row.locator("td").first.inner_text().strip()
    listed = f"() => document.querySelector('#dispatch-nearest .note')?.textContent.endsWith({label!r})"
    row.click(timeout=60_000)
    page.wait_for_function(listed, timeout=40_000)
    page.wait_for_selector("#dispatch-nearest tr.pick", timeout=60_000)
    etas = page.locator("#dispatch-nearest td.eta").all_inner_texts()
    assert 1 <= len(etas) <= 5 and all(text.endswith("min") for text in etas)
    assert [int(text.split()[0]) for text in etas] == sorted(int(text.split()[0]) for text in etas)
    hows = page.locator("#dispatch-nearest td.how").all_inner_texts()
    assert len(hows) == len(etas) and all(h.split(" km ")[1] in ("by road", "on foot by road", "across country",
                                                                 "flight") for h in hows)
    page.wait_for_function(f"() => {DATA}[2].lon.length >= 2", timeout=60_000)
    route = page.evaluate(f"() => [{DATA}[2].lon, {DATA}[2].lat]")
    assert route[0][-1] == pytest.approx(gap.lon) and route[1][-1] == pytest.approx(gap.lat)
    inside = ("(points) => { const b = " + MAP + ".getBounds(); "
              "return points.every(p => b.contains(p)); }")
    corners = [[float(gap.west), float(gap.south)], [float(gap.east), float(gap.north)]]
    points = corners + [list(p) for p in zip(*route)]  # the gap, the unit (the route's start) and the route
    page.wait_for_function(inside, arg=points, timeout=10_000)
    span = page.evaluate(f"() => {{ const b = {MAP}.getBounds(); return [b.getEast() - b.getWest(), "
                         "b.getNorth() - b.getSouth()]; }")
    route_span = [max(route[0]) - min(route[0]), max(route[1]) - min(route[1])]
    assert max(span) < 4 * max(route_span + [float(gap.east - gap.west), float(gap.north - gap.south)]) + 0.1
    # choosing the second unit draws its route instead, and fits the map to it
    if len(etas) > 1:
        first_start = route[0][0]
        page.locator("#dispatch-nearest tr.pick").nth(1).click()
        page.wait_for_function(f"(x) => {DATA}[2].lon[0] !== x", arg=first_start, timeout=10_000)
        second = page.evaluate(f"() => {DATA}[2].lon.map((x, i) => [x, {DATA}[2].lat[i]])")
        page.wait_for_function(inside, arg=corners + second, timeout=10_000)
    page.wait_for_function(READY)
    time.sleep(1)
    page.screenshot(path=str(artifacts / "dispatch.png"))
    assert not watch.console_errors, "\n".join(watch.console_errors)


@contextmanager
def _reloaded_desk(desk, desk_app, update: dict, output: str, ready: str):
    """The desk reloaded with its settings changed by ``update``, once ``ready`` holds; yields (page, the
    times a request for ``output`` was sent)."""
    page, watch, base = desk
    ctx = desk_app.server.extensions["gridwatch"]
    desk_app.server.extensions["gridwatch"] = WallContext(
        engine=ctx.engine, settings=ctx.settings.model_copy(update=update))
    sent_at = []

    def sent(request) -> None:
        if output in (request.post_data or ""):
            sent_at.append(time.monotonic())

    page.on("request", sent)
    try:
        page.goto(f"{base}/dispatch")
        page.wait_for_function(ready, timeout=60_000)
        yield page, sent_at
    finally:
        page.remove_listener("request", sent)
        desk_app.server.extensions["gridwatch"] = ctx
    page.goto(f"{base}/dispatch")
    page.wait_for_function(READY, timeout=60_000)
    assert not watch.console_errors, "\n".join(watch.console_errors)


@pytest.fixture()
def churning_desk(desk, desk_app):
    """The desk with its gap list drawn anew every 0.3 s; yields (page, when the list was sent)."""
    with _reloaded_desk(desk, desk_app, {"refresh_s": 0.3}, "dispatch-rows.data",
                        f"() => ({ROW_KEYS})().length > 2") as reloaded:
        yield reloaded


@pytest.mark.browser
def test_every_press_on_a_gap_lists_its_units_while_the_list_is_drawn_anew(churning_desk):
    """A press where a gap row is drawn lists that gap's nearest units, however often the list is replaced
    under the pointer: no press is lost, none needs a second."""
    page, lists = churning_desk
    started = time.monotonic()
    for i in (0, 1, 2, 0):
        row = page.locator("#dispatch-targets tr.pick").nth(i)
        label = row.locator("td").first.inner_text(timeout=20_000).strip()
        box = None
        while box is None:  # the row is read again when the list was drawn anew between two looks
            row.wait_for(state="visible", timeout=20_000)
            box = row.bounding_box(timeout=20_000)
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("(label) => document.querySelector('#dispatch-nearest .note')?.textContent"
                               ".endsWith(label) && !!document.querySelector('#dispatch-nearest tr.pick')",
                               arg=label, timeout=20_000)
        assert page.locator("#dispatch-targets tr.selected").count() == 1
    assert sum(t > started for t in lists) >= 4  # the list was indeed drawn anew meanwhile


def _acknowledged(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT id FROM alert WHERE acknowledged_at IS NOT NULL")).scalars())


def _one_ack_button(page):
    """The Acknowledge button of the first alert listed on its own (not in a group), and the alert's id."""
    button = page.locator("#dispatch-alerts button.ack:not(.ack-group):visible").first
    button.wait_for(timeout=20_000)
    return button, json.loads(button.get_attribute("id"))["id"]


def _gone(page, button_id: str, timeout_s: float = 60) -> None:
    """Wait until no element has the (Dash pattern) id ``button_id``."""
    deadline = time.monotonic() + timeout_s
    while page.evaluate("(id) => !!document.getElementById(id)", button_id):
        assert time.monotonic() < deadline, f"{button_id} still shown"
        time.sleep(0.1)


@pytest.mark.browser
def test_acknowledging_an_alert_stores_the_signed_in_account_and_when(desk, region):
    page, _, _ = desk
    name = page.locator(".dispatch-header .who").text_content().split(" · ")[0]
    button, alert_id = _one_ack_button(page)
    kind = page.evaluate("(id) => document.getElementById(id).closest('li.alert').dataset.kind",
                         button.get_attribute("id"))
    button.click()
    page.wait_for_function(f"() => document.querySelector('#dispatch-alerts')?.textContent.includes('ack. {name}')",
                           timeout=60_000)  # a refresh and a redraw on a busy machine
    with region.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT id, kind, acknowledged_by, acknowledged_at FROM alert WHERE acknowledged_by IS NOT NULL")).one()
        audited = conn.execute(sa.text("SELECT actor, address FROM audit_log WHERE action = 'alert_acknowledged' "
                                       "AND (detail->>'alert')::bigint = :id AND actor = :name"),
                               {"id": row.id, "name": name}).one()
    assert (row.id, row.kind, row.acknowledged_by) == (alert_id, kind, name)
    assert tuple(audited) == (name, "127.0.0.1")
    assert abs((row.acknowledged_at - datetime.now(timezone.utc)).total_seconds()) < 60


@pytest.fixture
def fast_desk(desk, desk_app):
    """The desk with its alert list refreshed every second; yields (page, when alert refreshes were sent)."""
    with _reloaded_desk(desk, desk_app, {"alert_refresh_s": 1.0}, "dispatch-alerts.children",
                        "() => !!document.querySelector('#dispatch-alerts li.unacked')") as reloaded:
        yield reloaded


@pytest.mark.browser
def test_one_click_during_refreshes_acknowledges_exactly_one_alert(fast_desk, region):
    page, refreshes = fast_desk
    button, alert_id = _one_ack_button(page)
    button_id = button.get_attribute("id")
    before = _acknowledged(region)
    clicked = time.monotonic()
    button.click()
    _gone(page, button_id)
    deadline = time.monotonic() + 60  # the list is refreshed (and redrawn when it changed) again, its buttons with
    while sum(t > clicked for t in refreshes) < 3 and time.monotonic() < deadline:  # it: 1 s apart, slower if busy
        page.wait_for_timeout(200)
    assert sum(t > clicked for t in refreshes) >= 3
    assert _acknowledged(region) - before == {alert_id}


@pytest.mark.browser
def test_a_group_button_acknowledges_exactly_the_groups_members(fast_desk, region):
    page, _ = fast_desk
    button = page.locator("#dispatch-alerts button.ack-group").first
    button.wait_for(timeout=20_000)
    button_id = button.get_attribute("id")
    members = {int(i) for i in json.loads(button_id)["ids"].split(",")}
    count = int(page.evaluate("(id) => document.getElementById(id).closest('li.group').dataset.count", button_id))
    before = _acknowledged(region)
    assert len(members) >= 2 and not members & before and len(members) <= count
    button.click()
    _gone(page, button_id)
    time.sleep(2)
    assert _acknowledged(region) - before == members


@pytest.mark.browser
def test_the_desk_downloads_the_evidence_and_the_shift_report(desk, tmp_path):
    page, _, _ = desk
    files = {}
    for button in ("#dispatch-export", "#dispatch-report"):
        with page.expect_download(timeout=120_000) as download:
            page.click(button)
        files[button] = tmp_path / download.value.suggested_filename
        download.value.save_as(files[button])
    evidence, report = files["#dispatch-export"], files["#dispatch-report"]
    assert evidence.name.startswith("evidence-") and evidence.suffix == ".gpkg"
    layers = subprocess.run(["ogrinfo", "-ro", "-q", str(evidence)], capture_output=True, text=True, check=True).stdout
    assert all(f": {name} (" in layers for name in ("grids", "border_segments", "positions", "incidents", "alerts"))
    assert report.name.startswith("shift-report-") and report.read_bytes().startswith(b"%PDF")
    assert page.locator("#dispatch-export-note").text_content() == ""


@pytest.mark.browser
def test_time_slider_moves_units_and_replays_a_track(desk, region):
    page, watch, _ = desk
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function(f"() => {DATA}[0].lon.length > 0", timeout=15_000)
    now_lons = page.evaluate(f"() => {DATA}[0].lon")
    page.locator("#dispatch-time [role=slider]").focus()
    page.keyboard.press("ArrowLeft")  # one step: 5 minutes back
    page.wait_for_function("() => document.querySelector('#dispatch-time-label').textContent.includes('Situation at')",
                           timeout=10_000)
    page.wait_for_function(f"(before) => JSON.stringify({DATA}[0].lon) !== JSON.stringify(before)", arg=now_lons,
                           timeout=10_000)
    assert len(page.evaluate(f"() => {DATA}[0].lon")) > 0
    assert page.locator("#dispatch-map-note").inner_text() == ""
    # the whole situation (the first choice): every unit moves
    page.locator("#dispatch-replay-unit").click()
    page.locator("[role=option]").first.click()
    page.locator("#dispatch-play").click()
    page.wait_for_function(f"() => {DATA}[5].lon && {DATA}[5].lon.length > 10", timeout=10_000)
    page.wait_for_function("() => /\\d\\d:\\d\\d/.test(document.querySelector('#dispatch-replay-when').textContent)")
    # one unit: its track, and one marker along it
    page.locator("#dispatch-replay-unit").click()
    page.locator("[role=option]").nth(1).click()
    page.wait_for_function(f"() => {DATA}[1].lon.length > 1", timeout=10_000)
    page.locator("#dispatch-play").click()
    page.wait_for_function(f"() => {DATA}[5].lon && {DATA}[5].lon.length === 1", timeout=10_000)
    page.wait_for_function("() => document.querySelector('#dispatch-replay-when').textContent.length > 0")
    assert not watch.console_errors, "\n".join(watch.console_errors)


@pytest.mark.browser
@pytest.mark.parametrize("lang, says", [("en", "No positions in this window"), ("zh", "此时段内无位置数据")])
def test_a_past_window_without_positions_says_so(desk, lang, says):
    """The region's fixes are all of the last hour and a half: 24 h back the map is empty, and says why."""
    page, watch, base = desk
    page.goto(f"{base}/dispatch?lang={lang}")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function(f"() => {DATA}[0].lon.length > 0", timeout=15_000)
    page.locator("#dispatch-time [role=slider]").focus()
    page.keyboard.press("Home")  # 24 h back
    note = page.locator("#dispatch-map-note")
    note.wait_for(state="visible", timeout=10_000)
    assert note.inner_text() == says
    assert page.evaluate(f"() => {DATA}[0].lon.length") == 0
    page.wait_for_function("(says) => document.querySelector('#dispatch-replay-when').textContent === says",
                           arg=says, timeout=10_000)  # the whole situation's replay: nothing to play
    page.locator("#dispatch-time [role=slider]").focus()
    page.keyboard.press("End")  # back to now: the note goes
    note.wait_for(state="hidden", timeout=10_000)
    page.goto(f"{base}/dispatch")
    page.wait_for_function(READY, timeout=30_000)
    assert not watch.console_errors, "\n".join(watch.console_errors)


@pytest.mark.browser
def test_chinese_desk(desk, artifacts):
    page, watch, base = desk
    page.goto(f"{base}/dispatch?lang=zh")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function(f"() => ({ROW_KEYS})().length > 0", timeout=20_000)
    assert "调度台" in page.locator("h1").inner_text()
    assert "巡控盲区" in page.locator("#dispatch-mode").inner_text()
    page.screenshot(path=str(artifacts / "dispatch-zh.png"))
    assert not watch.console_errors, "\n".join(watch.console_errors)


def test_open_incidents_most_severe_first(region):
    frame = open_incidents(region)
    assert (frame["status"] != "closed").all()
    assert frame["severity"].is_monotonic_decreasing
