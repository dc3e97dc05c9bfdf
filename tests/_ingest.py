"""Helpers for the live-ingest tests: a tiny region, device tokens, and the service as a subprocess."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import psycopg
import pytak

from gridwatch.bench._harness import IngestProcess, SmallDisk, free_port
from gridwatch.etl.ingest.devices import add_devices

__all__ = ["REGION_SQL", "CENTRE", "IngestProcess", "SmallDisk", "free_port", "seed", "provision", "rows", "cot_event"]

# lon 100.0-100.2, lat 22.0-22.2; two grids split at lon 100.1; a border strip along lat 22.0, inland beyond.
REGION_SQL = """
INSERT INTO command_unit (id, level, parent_id, code, name, geom) VALUES
 (1, 'prefecture', NULL, 'P', 'Pref', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.2,100 22.2,100 22)))', 4326)),
 (2, 'county', 1, 'C', 'County', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.2,100 22.2,100 22)))', 4326)),
 (3, 'township', 2, 'T', 'Town', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.2,100 22.2,100 22)))', 4326));
INSERT INTO grid (id, code, township_id, geom) VALUES
 (1, 'G-W', 3, ST_GeomFromText('MULTIPOLYGON(((100 22,100.1 22,100.1 22.2,100 22.2,100 22)))', 4326)),
 (2, 'G-E', 3, ST_GeomFromText('MULTIPOLYGON(((100.1 22,100.2 22,100.2 22.2,100.1 22.2,100.1 22)))', 4326));
INSERT INTO zone (id, kind, name, geom) VALUES
 (1, 'border_closed', 'strip', ST_GeomFromText('MULTIPOLYGON(((100 22,100.2 22,100.2 22.02,100 22.02,100 22)))', 4326)),
 (2, 'social_surface', 'inland', ST_GeomFromText('MULTIPOLYGON(((100 22.02,100.2 22.02,100.2 22.2,100 22.2,100 22.02)))', 4326));
INSERT INTO border_segment (id, km_from, km_to, geom) VALUES
 (1, 0, 20.6, ST_GeomFromText('LINESTRING(100 22, 100.2 22)', 4326));
"""
CENTRE = (100.05, 22.1)


def seed(url: str, units: dict[str, str], *, region: bool = True) -> dict[str, str]:
    """Insert the region (once) and ``units`` (callsign → kind); return a device token per unit."""
    with psycopg.connect(url) as conn:
        if region:
            conn.execute(REGION_SQL)
        conn.execute(
            "INSERT INTO unit (callsign, kind) SELECT * FROM unnest(%s::text[], %s::text[])",
            (list(units), list(units.values())),
        )
        return add_devices(conn, list(units))


def provision(url: str, callsigns: list[str], *, create_units: bool = False) -> dict[str, str]:
    """New device tokens for ``callsigns`` (making vehicle units of unknown ones when asked)."""
    with psycopg.connect(url) as conn:
        return add_devices(conn, callsigns, create_units=create_units)


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def cot_event(uid: str, seconds_ago: int, lon: float, lat: float, *, token: str | None = None,
              cot_type: str = "a-f-G-U-C") -> bytes:
    """A CoT event as pytak makes it: ``uid`` as callsign, a track, the token in ``<__auth>`` if given."""
    children = [ET.Element("track", course="270", speed="2.5")]
    if token:
        children.insert(0, ET.Element("__auth", token=token))
    event = pytak.cot_event(uid=uid, cot_type=cot_type, callsign=uid, detail=pytak.cot_detail(*children),
                            point=pytak.cot_point(lat=lat, lon=lon, ce=7, hae=100, le=9, precision=7))
    stamp = datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event.set("time", stamp)
    event.set("start", stamp)
    return pytak.serialize_cot(event)
