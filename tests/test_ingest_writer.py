"""The ingest writer reads the reference layers again only when they changed."""
from __future__ import annotations

import psycopg
import sqlalchemy as sa

from gridwatch.etl.ingest.writer import ReferenceCache

from _refdata import seed_region

NORTH = "MULTIPOLYGON(((100 22.2, 100.2 22.2, 100.2 22.3, 100 22.3, 100 22.2)))"


def test_reference_is_read_again_only_when_it_changed(clean_db: sa.Engine, db_url: str) -> None:
    seed_region(clean_db)
    with psycopg.connect(db_url, autocommit=True) as conn:
        cache = ReferenceCache()
        first = cache.get(conn)
        assert cache.get(conn) is first and cache.loads == 1 and len(first.grid_ids) == 2
        conn.execute("INSERT INTO sensor (code, kind, range_m, up, geom) "
                     "VALUES ('S1', 'camera', 500, true, ST_SetSRID(ST_MakePoint(100.1, 22.01), 4326))")
        assert cache.get(conn) is first and cache.loads == 1  # not a reference layer
        conn.execute(f"INSERT INTO grid (id, code, township_id, geom) "
                     f"VALUES (3, 'G-N', 3, ST_GeomFromText('{NORTH}', 4326))")
        assert len(cache.get(conn).grid_ids) == 3 and cache.loads == 2
        conn.execute("UPDATE zone SET name = 'strip 2' WHERE kind = 'border_closed'")
        cache.get(conn)
        cache.get(conn)
        assert cache.loads == 3
