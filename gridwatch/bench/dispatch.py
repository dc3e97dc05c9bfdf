"""``gridwatch bench dispatch``: the dispatcher's answers on the generated sample, each beside a baseline.

Runs in a throwaway database on the configured server, loaded with the whole
ETL run of the ``scale`` sample (kept under ``<home>/bench/sample-<scale>-<generator hash>``).
The sample ends at its export time, so the units' latest fixes are moved to
now (they would all be silent otherwise) and the gap list and alerts are
judged at the export time.

The nearest-unit answer is timed end to end on the server as the page gets it
(road-table version check, available units, the Dijkstras, the top 5 routes) with
the graph cached; the baseline is the 5 straight-line nearest units by
``ST_Distance``. The issue's "gap click to nearest units listed in 500 ms" is
timed in headless Chromium on the dispatch page (offline, as a dispatcher): from
the mouse press on a gap row (the event's own time stamp) to the first frame whose
nearest-units panel lists that gap, beside the server's own time for the same clicks (the nearest-units
request, from its sending to its answer's end). The road-table version check
alone is set beside the checksum of every road that it replaced.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import sqlalchemy as sa

from gridwatch.bench import Figure
from gridwatch.bench._harness import bench_engine, bench_sample, load_sample
from gridwatch.etl.alerts import refresh_alerts
from gridwatch.etl.manifest import read_manifest
from gridwatch.layers.gaps import gap_list
from gridwatch.layers.nearest import ROAD_VERSION, nearest_units, road_graph
from gridwatch.layers.replay import positions_at
from gridwatch.settings import Settings

__all__ = ["bench_dispatch"]

TARGETS = 40
RUNS = 10
CLICKS = 20
CLICK_TIMEOUT_MS = 10_000  # a click not answered by then counts at this value (and is named in the figure)
SHOWN = 6  # gap rows in view without scrolling the list
# In the page: when the mouse was last pressed, and the ms from there to the first frame whose
# nearest-units panel is for the gap ``label`` (null until then).
_PRESSED = "() => document.addEventListener('mousedown', e => { window.benchPressed = e.timeStamp; }, true)"
_LISTED = """(label) => {
    const panel = document.querySelector('#dispatch-nearest');
    const listed = panel && panel.querySelector('.note')?.textContent.endsWith(label)
        && panel.querySelector('tr.pick, .empty');
    return listed ? performance.now() - window.benchPressed : null;
}"""

# The road-table version as it was: a checksum of every road's id, class and geometry.
_ROAD_CHECKSUM = """
SELECT count(*), coalesce(max(id), 0),
       md5(coalesce(string_agg(id::text || class || md5(ST_AsEWKB(geom)), ',' ORDER BY id), ''))
FROM road
"""

_STRAIGHT_LINE = """
SELECT u.id, ST_Distance(l.geom::geography, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography) AS m
FROM unit u JOIN unit_latest l ON l.unit_id = u.id
WHERE u.status = 'on_duty' AND l.ts >= now() - make_interval(secs => :silent_s)
ORDER BY m LIMIT 5
"""


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def _clicks(engine: sa.Engine, settings: Settings) -> tuple[list[float], list[float], int]:
    """Click :data:`CLICKS` gap rows on the served dispatch page: the browser's ms from press to listed
    units, the server's ms for the same nearest-units requests, and how many clicks were not answered
    within :data:`CLICK_TIMEOUT_MS` (each counted at that value)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from gridwatch.bench._harness import new_account, offline_browser, offline_page, serving
    from gridwatch.dashboard.app import create_app

    app = create_app(engine.url.render_as_string(hide_password=False), settings)
    account = new_account(engine, "dispatcher")
    browser_ms: list[float] = []
    server_ms: list[float] = []
    unanswered = 0

    def answered(request) -> None:
        if "_dash-update-component" in request.url and "dispatch-nearest.children" in (request.post_data or ""):
            timing = request.timing
            server_ms.append(timing["responseEnd"] - timing["requestStart"])

    with serving(app.server) as base, offline_browser() as browser:
        context, page, offsite = offline_page(browser, base, account=account, viewport=(1920, 1080))
        page.on("requestfinished", answered)
        page.goto(f"{base}/dispatch")
        page.wait_for_function("() => document.querySelectorAll('#dispatch-targets tr.pick').length > 0",
                               timeout=120_000)
        page.evaluate(_PRESSED)
        rows = page.locator("#dispatch-targets tr.pick")
        for i in np.arange(CLICKS) % SHOWN:  # the gaps on top, as a dispatcher works them, never twice running
            row = rows.nth(int(i))
            try:
                label = row.locator("td").first.inner_text(timeout=CLICK_TIMEOUT_MS).strip()
                box = None
                while box is None:  # not between two drawings of the list
                    row.wait_for(state="visible", timeout=CLICK_TIMEOUT_MS)
                    box = row.bounding_box(timeout=CLICK_TIMEOUT_MS)
                # a press where the row is, as a person clicks: no wait for the busy page to hold it still
                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                listed = page.wait_for_function(_LISTED, arg=label, polling="raf", timeout=CLICK_TIMEOUT_MS)
                browser_ms.append(float(listed.json_value()))
            except PlaywrightTimeout:
                browser_ms.append(float(CLICK_TIMEOUT_MS))
                unanswered += 1
            page.wait_for_timeout(300)
        context.close()
    if offsite:
        raise RuntimeError(f"the dispatch page asked other origins: {offsite[:3]}")
    return browser_ms, server_ms, unanswered


def bench_dispatch(settings: Settings, *, scale: str) -> list[Figure]:
    """Nearest units by road (p50/p95) vs straight line, graph build, gap list, alert refresh, positions at T."""
    manifest = read_manifest(bench_sample(settings, scale))
    with bench_engine(settings) as engine:
        load_sample(engine, manifest, settings=settings)
        as_of = manifest.exported_at
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE unit_latest SET ts = ts + (now() - CAST(:t AS timestamptz))"), {"t": as_of})
            conn.exec_driver_sql("ANALYZE")
            roads, units = conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM road), (SELECT count(*) FROM unit WHERE status = 'on_duty')")).one()
        build_ms = _ms(lambda: road_graph(engine))
        graph = road_graph(engine)
        gaps = gap_list(engine, settings, now=as_of, limit=TARGETS)
        targets = list(zip(gaps["lon"], gaps["lat"]))
        road_ms = [_ms(lambda: nearest_units(engine, settings, target)) for target in targets]
        with engine.connect() as conn:
            version_ms = [_ms(lambda: conn.execute(sa.text(ROAD_VERSION)).scalar()) for _ in range(RUNS)]
            checksum_ms = [_ms(lambda: conn.execute(sa.text(_ROAD_CHECKSUM)).one()) for _ in range(RUNS)]
        with engine.connect() as conn:
            line_ms = [_ms(lambda: conn.execute(sa.text(_STRAIGHT_LINE), {
                "lon": lon, "lat": lat, "silent_s": settings.unit_silent_after_s}).fetchall()) for lon, lat in targets]
        gap_ms = [_ms(lambda: gap_list(engine, settings, now=as_of)) for _ in range(RUNS)]
        with engine.begin() as conn:
            first_refresh = _ms(lambda: refresh_alerts(conn, settings, as_of))
        refresh_ms = []
        for _ in range(RUNS):
            with engine.begin() as conn:
                refresh_ms.append(_ms(lambda: refresh_alerts(conn, settings, as_of)))
        past_ms = [_ms(lambda: positions_at(engine, settings, as_of - timedelta(hours=h))) for h in range(1, RUNS + 1)]
        click_ms, answer_ms, unanswered = _clicks(engine, settings)
    road_p50, road_p95 = _percentiles(road_ms)
    line_p50, line_p95 = _percentiles(line_ms)
    nodes = graph.graph.number_of_nodes() if graph else 0
    return [
        Figure(f"nearest 5 units by road p50 ({units} units, {roads} roads, {nodes:,} nodes, {len(targets)} targets)",
               road_p50, "ms", "", line_p50, "straight line ST_Distance"),
        Figure("nearest 5 units by road p95 (server side)", road_p95, "ms", "<= 300", line_p95,
               "straight line ST_Distance"),
        Figure(f"gap click -> nearest units listed p95 (browser, {len(click_ms)} clicks, {unanswered} not listed "
               f"within {CLICK_TIMEOUT_MS / 1000:g} s)",
               _percentiles(click_ms)[1], "ms", "<= 500", _percentiles(answer_ms)[1] if answer_ms else None,
               "server's answer to the same clicks p95"),
        Figure("road-table version check p50 (every nearest-unit request)", _percentiles(version_ms)[0], "ms", "",
               _percentiles(checksum_ms)[0], "checksum of every road"),
        Figure("road graph build (once per road-table version)", build_ms, "ms"),
        Figure("gap list p50 (whole jurisdiction, 200 rows)", _percentiles(gap_ms)[0], "ms"),
        Figure("alert refresh p50 (nothing changed)", _percentiles(refresh_ms)[0], "ms", "<= 10000",
               first_refresh, "first refresh (all raised)"),
        Figure("positions at T p50 (every unit's last fix)", _percentiles(past_ms)[0], "ms"),
    ]
