"""``gridwatch bench tiles``: the wall's figures (tiles, live refresh, page load), each with its target.

Runs in a scratch database on the configured server, filled with the
synthetic region of the given scale (:mod:`gridwatch.data.synthetic`), dropped at the end.
Tiles are timed per layer at z6..z14 over the tiles covering the region; the
baseline is the same rows as GeoJSON (``ST_AsGeoJSON``), what a naive endpoint
would send. The group tiles the map fetches are timed at z8..z12 cold (an empty
tile cache: one statement builds the tile) and warm (made before, its data unchanged:
the cache answers after reading the data's version); their baseline is the tile made
as before, one statement per layer in series (each layer's tile in turn, uncached).
The live refresh is timed end to end on the server (queries, trace
building and the JSON Dash sends) and its Patch size is compared with resending
the whole figure. The page is timed in headless Chromium, offline, as a wall
display opens it: from navigation start to the map fitted to the region with
every tile loaded and the first live units drawn, in a cold browser context each
time, beside the milestones of the same loads that show where the time goes (Dash's
scripts run, plotly.js evaluated, plotly's map made). The same loads are timed again on a busy
machine: one core kept busy by another process, as an ETL run or the ingest service beside the
wall would.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import sqlalchemy as sa
from plotly.io.json import to_json_plotly

from gridwatch.bench import Figure
from gridwatch.bench._harness import INTERACTIVE, bench_engine, new_account, offline_browser, offline_page, serving
from gridwatch.dashboard._context import WallContext
from gridwatch.dashboard.live_map import map_figure
from gridwatch.dashboard.wall_data import DETAIL_MAX_UNITS, live_update
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.errors import GridwatchError, InputError
from gridwatch.layers.catalog import Layer, available_layers
from gridwatch.layers.queries import jurisdiction_bounds
from gridwatch.layers.tiles import TILE_GROUPS, TileCache, group_of, group_tile, tile, tiles_covering
from gridwatch.settings import Settings

__all__ = ["bench_tiles", "TARGETS"]

ZOOMS = (6, 8, 10, 12, 14)
GROUP_ZOOMS = range(8, 13)  # the zooms a wall and a dispatcher look at
TILES_PER_ZOOM = 12
LIVE_RUNS = 20
PAGE_LOADS = 5
# The wall's figures (the targets) per scale: a tile made warm (kept, data unchanged) and cold.
TARGETS = {
    "small": {"tile_warm": "", "tile_cold": "", "live_ms": "", "live_kb": "", "page_s": "", "page_busy_s": ""},
    "prefecture": {"tile_warm": "<= 20", "tile_cold": "<= 100", "live_ms": "<= 100", "live_kb": "<= 50",
                   "page_s": "<= 2", "page_busy_s": "<= 3"},
    "province": {"tile_warm": "<= 50", "tile_cold": "<= 150", "live_ms": "<= 500", "live_kb": "", "page_s": "",
                 "page_busy_s": ""},
}



def _timed(fn: Callable[[], object], runs: int = 1) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _sample(bounds: tuple[float, float, float, float], layer: Layer) -> list[tuple[int, int, int]]:
    """Up to TILES_PER_ZOOM tiles per zoom over the region, evenly spread."""
    chosen = []
    for z in (z for z in ZOOMS if z >= layer.minzoom):
        covering = tiles_covering(bounds, z)
        chosen += [covering[i] for i in np.linspace(0, len(covering) - 1, min(TILES_PER_ZOOM, len(covering))).astype(int)]
    return list(dict.fromkeys(chosen))


def _geojson_sql(layer: Layer) -> sa.TextClause:
    return sa.text(
        f"SELECT json_agg(ST_AsGeoJSON(s.*)::json) FROM ({layer.source}) AS s "
        "WHERE s.geom && ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326)"
    )


def _tile_figures(engine: sa.Engine, targets: dict[str, str]) -> list[Figure]:
    bounds = jurisdiction_bounds(engine)
    figures, all_mvt, all_json = [], [], []
    for layer in available_layers(engine):
        addresses = _sample(bounds, layer)
        mvt_ms = [ms for z, x, y in addresses for ms in _timed(lambda: tile(engine, layer.id, z, x, y))]
        with engine.connect() as conn:
            json_ms = [ms for z, x, y in addresses
                       for ms in _timed(lambda: conn.execute(_geojson_sql(layer), {"z": z, "x": x, "y": y}).scalar())]
        all_mvt += mvt_ms
        all_json += json_ms
        figures.append(Figure(f"tile p95 {layer.id} ({len(addresses)} tiles z{min(a[0] for a in addresses)}-14, cold)",
                              float(np.percentile(mvt_ms, 95)), "ms", targets["tile_cold"],
                              float(np.percentile(json_ms, 95)), "same rows as GeoJSON"))
    figures.insert(0, Figure("tile p95 all layers (cold)", float(np.percentile(all_mvt, 95)), "ms",
                             targets["tile_cold"], float(np.percentile(all_json, 95)), "same rows as GeoJSON"))
    figures.insert(0, Figure("tile p50 all layers (cold)", float(np.percentile(all_mvt, 50)), "ms", "",
                             float(np.percentile(all_json, 50)), "same rows as GeoJSON"))
    return _group_figures(engine, bounds, targets) + figures


def _group_figures(engine: sa.Engine, bounds: tuple[float, float, float, float],
                   targets: dict[str, str]) -> list[Figure]:
    """What the map fetches: one tile per group and address, cold and warm, beside the layers made in series."""
    addresses = list(dict.fromkeys(a for layer in available_layers(engine) for a in _sample(bounds, layer)
                                   if a[0] in GROUP_ZOOMS))
    layers = available_layers(engine)
    figures = []
    for group in TILE_GROUPS:
        def in_series(z: int, x: int, y: int) -> None:
            for layer in layers:
                if group_of(layer) == group and layer.minzoom <= z <= layer.maxzoom:
                    tile(engine, layer.id, z, x, y)

        def cached(z: int, x: int, y: int) -> None:
            group_tile(engine, group, z, x, y, cache=cache)

        cache = TileCache(2**30)
        series_ms = [ms for z, x, y in addresses for ms in _timed(lambda: in_series(z, x, y))]
        cold_ms = [ms for z, x, y in addresses for ms in _timed(lambda: cached(z, x, y))]  # each address once
        warm_ms = [ms for z, x, y in addresses for ms in _timed(lambda: cached(z, x, y))]  # again: kept
        series = float(np.percentile(series_ms, 95))
        span = f"{len(addresses)} tiles z{GROUP_ZOOMS[0]}-{GROUP_ZOOMS[-1]}"
        figures += [
            Figure(f"group tile p95 {group} warm ({span}, kept, data unchanged)", float(np.percentile(warm_ms, 95)),
                   "ms", targets["tile_warm"], series, "one statement per layer in series"),
            Figure(f"group tile p95 {group} cold ({span}, one statement, cache empty)",
                   float(np.percentile(cold_ms, 95)), "ms", targets["tile_cold"], series,
                   "one statement per layer in series"),
        ]
    return figures


def _live_figures(engine: sa.Engine, settings: Settings, targets: dict[str, str]) -> list[Figure]:
    ctx = WallContext(engine, settings)

    def refresh() -> str:  # what the live callback does: the update, then the JSON of its Patch
        return to_json_plotly(live_update(ctx, None, lang="en").patch().to_plotly_json())

    refresh()  # warm up
    server_ms = _timed(refresh, LIVE_RUNS)
    update = live_update(ctx, None, lang="en")
    patch = to_json_plotly(update.patch().to_plotly_json())
    whole = map_figure("http://host/style.json")
    whole.data = []
    whole.add_traces(update.traces)
    with engine.connect() as conn:
        units = conn.execute(sa.text("SELECT count(*) FROM unit_latest")).scalar()
    detail = " + trails" if units <= DETAIL_MAX_UNITS else ", no trails past 2k"
    return [
        Figure(f"live refresh server time p50 ({units:,} units{detail})", float(np.percentile(server_ms, 50)), "ms",
               targets["live_ms"] or f"<= {settings.live_refresh_s * 1000:g}"),
        Figure("live refresh payload (Patch of traces)", len(patch.encode()) / 1024, "KB",
               targets["live_kb"],
               len(whole.to_json().encode()) / 1024, "whole figure resent"),
    ]


# Marks in the page, each once: plotly.js evaluated (it sets window.Plotly last) and plotly's MapLibre map made.
MILESTONES = """(() => {
    let plotly;
    Object.defineProperty(window, 'Plotly', {configurable: true, get: () => plotly,
        set: (v) => { plotly = v; if (!performance.getEntriesByName('plotly-evaluated').length) {
            performance.mark('plotly-evaluated'); } }});
    const made = () => {
        const gd = document.querySelector('#wall-map .js-plotly-plot');
        if (gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot) {
            performance.mark('map-made');
        } else { setTimeout(made, 20); }
    };
    made();
})()"""
# Navigation-start milliseconds of Dash's scripts run (DOMContentLoaded) and of the marks above.
_READ_MILESTONES = """() => [performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
    ...['plotly-evaluated', 'map-made'].map(n => performance.getEntriesByName(n)[0].startTime)]"""


def _page_load(browser, base: str, bounds: list[float], *, account: tuple[str, str]) -> tuple[list[float], list[str]]:
    """One cold load of the wall: navigation-start milliseconds of (Dash's scripts run, plotly.js
    evaluated, the map made, interactive), and the URLs of other origins it asked for."""
    context, page, refused = offline_page(browser, base, account=account)
    context.add_init_script(MILESTONES)
    try:
        page.goto(f"{base}/wall", wait_until="commit")
        # Polled every 20 ms: polling on every animation frame is itself work that slows the page.
        done = page.wait_for_function(INTERACTIVE, arg=bounds, timeout=120_000, polling=20)
        return [*page.evaluate(_READ_MILESTONES), done.json_value()], refused
    finally:
        context.close()


@contextmanager
def _busy_core() -> Iterator[None]:
    """One core kept busy by another process (a spinning Python) while the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _page_figures(engine: sa.Engine, targets: dict[str, str]) -> list[Figure]:
    """Navigation start to the fitted map with tiles loaded and live units drawn: p50 of cold loads,
    on the machine as it is and with one core busy.

    Where the time goes, from the same loads: each milestone is printed with the one before it as
    its baseline (Dash's scripts run, plotly.js evaluated, plotly's map made, interactive).
    """
    from gridwatch.dashboard.app import create_app

    bounds = list(jurisdiction_bounds(engine))
    app = create_app(engine.url.render_as_string(hide_password=False))
    account = new_account(engine)
    calm, busy, offsite = [], [], []
    with offline_browser() as browser, serving(app.server) as base:
        for loads, machine in ((calm, nullcontext), (busy, _busy_core)):
            with machine():
                for _ in range(PAGE_LOADS):
                    milestones, refused = _page_load(browser, base, bounds, account=account)
                    loads.append(milestones)
                    offsite += refused
    if offsite:
        raise GridwatchError(f"the wall asked other origins (it must work offline): {sorted(set(offsite))[:5]}")
    dash_run, plotly_run, map_made, interactive = (float(np.percentile(column, 50)) / 1000 for column in zip(*calm))
    busy_plotly, busy_interactive = (float(np.percentile([load[i] for load in busy], 50)) / 1000 for i in (1, 3))

    def worst(loads: list[list[float]]) -> float:
        return max(load[-1] for load in loads) / 1000

    return [Figure(f"page interactive p50 ({PAGE_LOADS} cold loads, max {worst(calm):.2f} s)",
                   interactive, "s", targets["page_s"], plotly_run, "plotly.js evaluated, same loads"),
            Figure(f"page interactive p50, one core busy ({PAGE_LOADS} cold loads, max {worst(busy):.2f} s)",
                   busy_interactive, "s", targets["page_busy_s"], busy_plotly, "plotly.js evaluated, same loads"),
            Figure("page: plotly's map made p50", map_made, "s", "", plotly_run, "plotly.js evaluated"),
            Figure("page: plotly.js evaluated p50", plotly_run, "s", "", dash_run, "Dash's scripts run")]


def bench_tiles(settings: Settings, *, scale: str) -> list[Figure]:
    """Tile p50/p95 per layer, the live refresh and the page load, on a synthetic region of ``scale``."""
    if scale not in REGIONS:
        raise InputError(f"scale {scale!r} is unknown; expected one of {sorted(REGIONS)}")
    targets = TARGETS[scale]
    with bench_engine(settings) as engine:
        make_region(engine, REGIONS[scale])
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        return (_tile_figures(engine, targets) + _live_figures(engine, settings, targets)
                + _page_figures(engine, targets))
