"""``gridwatch bench tiles``: vector-tile and live-refresh figures, each with a baseline.

Runs in a scratch database on the configured server, filled with the
synthetic region of the given scale (:mod:`layers._synthetic`), dropped at the end.
Tiles are timed per layer at z6..z14 over the tiles covering the region; the
baseline is the same rows as GeoJSON (``ST_AsGeoJSON``), what a naive endpoint
would send. The live refresh is timed end to end on the server (queries and
trace building) and its Patch size is compared with resending the whole figure.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa

from dashboard._context import WallContext
from dashboard.live_map import map_figure
from dashboard.wall_data import live_update
from etl.bench import bench_engine
from gridwatch.bench import Figure
from gridwatch.errors import InputError
from gridwatch.settings import Settings
from layers._synthetic import REGIONS, make_region
from layers.catalog import Layer, available_layers
from layers.queries import jurisdiction_bounds
from layers.tiles import tile, tiles_covering

__all__ = ["bench_tiles"]

ZOOMS = (6, 8, 10, 12, 14)
TILES_PER_ZOOM = 12
LIVE_RUNS = 20


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


def _tile_figures(engine: sa.Engine) -> list[Figure]:
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
        figures.append(Figure(f"tile p95 {layer.id} ({len(addresses)} tiles z{min(a[0] for a in addresses)}-14)",
                              float(np.percentile(mvt_ms, 95)), "ms", "<= 50 ms",
                              float(np.percentile(json_ms, 95)), "same rows as GeoJSON"))
    figures.insert(0, Figure("tile p95 all layers", float(np.percentile(all_mvt, 95)), "ms", "<= 50 ms",
                             float(np.percentile(all_json, 95)), "same rows as GeoJSON"))
    figures.insert(0, Figure("tile p50 all layers", float(np.percentile(all_mvt, 50)), "ms", "",
                             float(np.percentile(all_json, 50)), "same rows as GeoJSON"))
    return figures


def _live_figures(engine: sa.Engine, settings: Settings) -> list[Figure]:
    ctx = WallContext(engine, settings)
    live_update(ctx, None, lang="en")  # warm up
    server_ms = _timed(lambda: live_update(ctx, None, lang="en"), LIVE_RUNS)
    update = live_update(ctx, None, lang="en")
    patch = json.dumps(update.patch().to_plotly_json())
    whole = map_figure("http://host/style.json")
    whole.data = []
    whole.add_traces(update.traces)
    with engine.connect() as conn:
        units = conn.execute(sa.text("SELECT count(*) FROM unit_latest")).scalar()
    return [
        Figure(f"live refresh server time p50 ({units} units + trails)", float(np.percentile(server_ms, 50)), "ms",
               "well under the 5 s tick"),
        Figure("live refresh payload (Patch of traces)", len(patch) / 1024, "KB", "small, no layout",
               len(whole.to_json()) / 1024, "whole figure resent"),
    ]


def bench_tiles(settings: Settings, *, scale: str) -> list[Figure]:
    """Tile p50/p95 per layer and the live refresh, on a synthetic region of ``scale``."""
    if scale not in REGIONS:
        raise InputError(f"scale {scale!r} is unknown; expected one of {sorted(REGIONS)}")
    with bench_engine(settings) as engine:
        make_region(engine, REGIONS[scale])
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        return _tile_figures(engine) + _live_figures(engine, settings)
