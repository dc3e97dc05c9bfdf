"""A tiny hand-made region for the ETL tests, inserted with plain SQL.

The prefecture is the square lon 100.0-100.2, lat 22.0-22.2; the border runs
along lat 22.0 in two 0.1-degree segments; a border_closed strip covers
lat 22.0-22.02 and the rest is social_surface; two grids split the square at
lon 100.1. Units: ``F1`` (foot), ``V1`` (vehicle).
"""
from __future__ import annotations

import sqlalchemy as sa

from gridwatch.bench.faults import table_checks as snapshot  # what a run leaves behind, to compare runs
from gridwatch.etl.schema import metadata

__all__ = ["WEST", "EAST", "SQUARE", "STRIP", "INLAND", "REGION_SQL", "DATA_TABLES", "empty_tables", "seed_region",
           "rows", "snapshot"]

WEST = "MULTIPOLYGON(((100 22, 100.1 22, 100.1 22.2, 100 22.2, 100 22)))"
EAST = "MULTIPOLYGON(((100.1 22, 100.2 22, 100.2 22.2, 100.1 22.2, 100.1 22)))"
SQUARE = "MULTIPOLYGON(((100 22, 100.2 22, 100.2 22.2, 100 22.2, 100 22)))"
STRIP = "MULTIPOLYGON(((100 22, 100.2 22, 100.2 22.02, 100 22.02, 100 22)))"
INLAND = "MULTIPOLYGON(((100 22.02, 100.2 22.02, 100.2 22.2, 100 22.2, 100 22.02)))"

REGION_SQL = f"""
INSERT INTO command_unit (id, level, parent_id, code, name, geom) VALUES
 (1, 'prefecture', NULL, 'P', 'Pref', ST_GeomFromText('{SQUARE}', 4326)),
 (2, 'county', 1, 'C', 'County', ST_GeomFromText('{SQUARE}', 4326)),
 (3, 'township', 2, 'T', 'Town', ST_GeomFromText('{SQUARE}', 4326)),
 (4, 'station', 3, 'S', 'Station', ST_GeomFromText('{SQUARE}', 4326));
INSERT INTO police_area (id, code, station_id, geom) VALUES (1, 'PA1', 4, ST_GeomFromText('{WEST}', 4326));
INSERT INTO grid (id, code, township_id, police_area_id, geom) VALUES
 (1, 'G-W', 3, 1, ST_GeomFromText('{WEST}', 4326)),
 (2, 'G-E', 3, NULL, ST_GeomFromText('{EAST}', 4326));
INSERT INTO zone (id, kind, name, geom) VALUES
 (1, 'border_closed', 'strip', ST_GeomFromText('{STRIP}', 4326)),
 (2, 'social_surface', 'inland', ST_GeomFromText('{INLAND}', 4326));
INSERT INTO border_segment (id, km_from, km_to, geom) VALUES
 (1, 0, 10.3, ST_GeomFromText('LINESTRING(100 22, 100.1 22)', 4326)),
 (2, 10.3, 20.6, ST_GeomFromText('LINESTRING(100.1 22, 100.2 22)', 4326));
INSERT INTO unit (id, callsign, kind, command_unit_id) VALUES (1, 'F1', 'foot', 4), (2, 'V1', 'vehicle', 4);
SELECT setval('unit_id_seq', 10);
"""


# Tables holding data (every declared table; not the PostGIS catalog), emptied between tests.
# Every table but the audit log, which only ever grows (it refuses TRUNCATE), and the change
# counts the tile cache is keyed by (emptied, they would count again from where a test began).
DATA_TABLES = tuple(table.name for table in metadata.sorted_tables if table.name not in ("audit_log", "table_change"))


def empty_tables(engine: sa.Engine) -> None:
    """Empty every data table (ids restart)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))


def seed_region(engine: sa.Engine) -> None:
    """Insert the tiny region (the database must be empty: use ``clean_db``)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(REGION_SQL)


def rows(engine: sa.Engine, query: str) -> list[tuple]:
    """The rows of ``query`` as plain tuples."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]
