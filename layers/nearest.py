"""Nearest available units to a target by travel time for their kind, over a cached road graph.

The graph (:func:`gridwatch.geo.routing.build_road_graph`) is built once per version of
the ``road`` table: its change count in ``table_change`` (bumped in the transaction of
every write to ``road``), one row read by key; a committed change to any road makes the
next call rebuild it. Available units: status ``on_duty`` with a fix newer than
``settings.unit_silent_after_s``.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from gridwatch.geo.routing import RoadGraph, build_road_graph, rank_units
from gridwatch.layers.queries import SCOPE, UNIT_IN_SCOPE
from gridwatch.settings import Settings

__all__ = ["road_graph", "available_units", "nearest_units", "ROAD_VERSION"]

ROAD_VERSION = "SELECT (SELECT row(generation, changed_at)::text FROM table_change WHERE name = 'road')"
_LOCK = threading.Lock()
_CACHE: dict[str, tuple[str | None, RoadGraph | None]] = {}


def road_graph(engine: sa.Engine) -> RoadGraph | None:
    """The routing graph of the ``road`` table (None when it is empty), rebuilt when the roads change."""
    key = engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn:
        version = conn.execute(sa.text(ROAD_VERSION)).scalar()
        cached = _CACHE.get(key)
        if cached and cached[0] == version:
            return cached[1]
        with _LOCK:
            cached = _CACHE.get(key)
            if cached and cached[0] == version:
                return cached[1]
            rows = conn.execute(sa.text("SELECT ST_AsBinary(geom) AS wkb, class FROM road ORDER BY id")).fetchall()
            graph = None
            if rows:
                wkb, classes = zip(*rows)
                graph = build_road_graph(shapely.from_wkb(list(wkb)), np.asarray(classes, dtype=object))
            _CACHE[key] = (version, graph)
            return graph


def available_units(engine: sa.Engine, settings: Settings, *, scope: int | None = None) -> pd.DataFrame:
    """Units on duty and not silent (of command unit ``scope`` and below; None: all), at their latest
    fix: unit_id, callsign, kind, lon, lat, ts."""
    sql = SCOPE + f"""
    SELECT u.id AS unit_id, u.callsign, u.kind, ST_X(l.geom) AS lon, ST_Y(l.geom) AS lat, l.ts
    FROM unit u JOIN unit_latest l ON l.unit_id = u.id
    WHERE u.status = 'on_duty' AND l.ts >= now() - make_interval(secs => :silent_s) AND {UNIT_IN_SCOPE}
    ORDER BY u.id
    """
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), {"scope": scope, "silent_s": settings.unit_silent_after_s})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def nearest_units(
    engine: sa.Engine, settings: Settings, target: tuple[float, float], *, k: int = 5, scope: int | None = None
) -> pd.DataFrame:
    """The ``k`` available units quickest to ``target`` (lon, lat) for their kind, quickest first.

    Columns: unit_id, callsign, kind, lon, lat, ts, eta_s, via, route_m, route (see
    :func:`gridwatch.geo.routing.rank_units`). Empty without roads or available units.
    """
    units = available_units(engine, settings, scope=scope)
    graph = road_graph(engine)
    if graph is None or units.empty:
        return units.iloc[:0].assign(eta_s=[], via=[], route_m=[], route=[])
    return rank_units(graph, target, units, speeds=settings.unit_speed_kmh, k=k)
