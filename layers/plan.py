"""Reads of the grid plan: versions, a township's faces and grids in a version, a version's grids."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import sqlalchemy as sa

from gridwatch.geo.plan import Plan
from gridwatch.geo.plan_faces import Blocks

__all__ = ["versions", "head_version", "township_plan", "version_grids", "townships", "draft_of",
           "plan_of"]


def versions(engine: sa.Engine, *, limit: int = 50) -> pd.DataFrame:
    """Saved versions, newest first: version, created_at, author, note, base_version, townships, published_at,
    and ``current`` (the one the grid layer shows)."""
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(
            "SELECT v.version, v.created_at, v.author, v.note, v.base_version, v.townships, v.published_at, "
            "EXISTS (SELECT 1 FROM plan_grid p WHERE p.version = v.version) AS plan "
            "FROM grid_version v ORDER BY v.version DESC LIMIT :n"), conn, params={"n": limit})
    published_at = frame["published_at"].dropna()
    current = frame.loc[published_at.idxmax(), "version"] if len(published_at) else None
    frame["current"] = frame["version"] == current
    return frame


def head_version(engine: sa.Engine) -> int | None:
    """The latest version with a plan (faces assigned)."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT max(version) FROM plan_assignment")).scalar()


def townships(engine: sa.Engine) -> pd.DataFrame:
    """Townships that have grids: code, name, bounds (west, south, east, north)."""
    with engine.connect() as conn:
        return pd.read_sql(sa.text(
            "SELECT t.code, t.name, ST_XMin(t.geom) AS west, ST_YMin(t.geom) AS south, ST_XMax(t.geom) AS east, "
            "ST_YMax(t.geom) AS north FROM command_unit t WHERE t.level = 'township' "
            "AND EXISTS (SELECT 1 FROM grid g WHERE g.township_id = t.id) ORDER BY t.code"), conn)


_FACE_COLUMNS = """f.id AS face_id, f.township_code AS township, f.police_area_code AS police_area,
       coalesce(f.source_id, -1) AS source, f.households, f.population, f.workload, f.area_m2, f.perimeter_m"""
_FACES = f"""
SELECT {_FACE_COLUMNS}, a.grid_code AS grid, f.geom
FROM plan_assignment a JOIN plan_face f ON f.id = a.face_id
WHERE a.version = :v AND f.township_code = :t ORDER BY f.id
"""
_FACES_BY_ID = f"SELECT {_FACE_COLUMNS}, f.geom FROM plan_face f WHERE f.id = ANY(:ids) ORDER BY f.id"
_EDGES = """
SELECT e.a, e.b, e.length_m FROM plan_face_edge e
WHERE e.a = ANY(:ids) AND e.b = ANY(:ids)
"""
_GRIDS = """
SELECT code, township_code AS township, police_area_code AS police_area, workers, locked, name
FROM plan_grid WHERE version = :v AND township_code = :t ORDER BY code
"""


def township_plan(engine: sa.Engine, version: int, township: str) -> Plan:
    """A township's plan in ``version``: its faces, their grids and the grids' attributes."""
    with engine.connect() as conn:
        faces = gpd.read_postgis(sa.text(_FACES), conn, geom_col="geom", params={"v": version, "t": township})
        ids = faces["face_id"].to_numpy(dtype=np.int64)
        edges = pd.read_sql(sa.text(_EDGES), conn, params={"ids": ids.tolist()})
        grids = pd.read_sql(sa.text(_GRIDS), conn, params={"v": version, "t": township}, index_col="code")
    return plan_of(faces.rename_geometry("geometry"), edges, grids)


def plan_of(faces: gpd.GeoDataFrame, edges: pd.DataFrame, grids: pd.DataFrame) -> Plan:
    """A :class:`Plan` from face rows (with ``grid``), edge rows (face ids ``a``, ``b``, ``length_m``) and grids."""
    ids = faces["face_id"].to_numpy(dtype=np.int64)
    position = pd.Series(np.arange(len(ids)), index=ids)
    i = position.reindex(edges["a"].to_numpy()).to_numpy()
    j = position.reindex(edges["b"].to_numpy()).to_numpy()
    known = ~(np.isnan(i) | np.isnan(j))
    i, j = i[known].astype(np.int64), j[known].astype(np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    grid = faces["grid"].to_numpy(dtype=object)
    blocks = Blocks(faces.drop(columns="grid").reset_index(drop=True),
                    (lo, hi, edges["length_m"].to_numpy(dtype=float)[known]))
    grids = grids.copy()
    grids.index = grids.index.astype(str)
    grids.index.name = "code"
    grids["locked"] = grids["locked"].astype(bool)
    return Plan(blocks, np.where(pd.notna(grid), grid, None).astype(object), grids)


def version_grids(engine: sa.Engine, version: int, *, township: str | None = None) -> gpd.GeoDataFrame:
    """The grids of a version as polygons (unions of their faces), lon/lat: code, name, township_code,
    police_area_code, households, population, workload, workers, locked."""
    with engine.connect() as conn:
        return gpd.read_postgis(sa.text(
            "SELECT pg.code, pg.name, pg.township_code, pg.police_area_code, "
            "round(sum(f.households))::int AS households, round(sum(f.population))::int AS population, "
            "round(sum(f.workload))::int AS workload, pg.workers, pg.locked, "
            "ST_Multi(ST_CollectionExtract(ST_Union(f.geom, 1e-9), 3)) AS geom "
            "FROM plan_grid pg JOIN plan_assignment a ON a.version = pg.version AND a.grid_code = pg.code "
            "JOIN plan_face f ON f.id = a.face_id "
            "WHERE pg.version = :v AND (CAST(:t AS text) IS NULL OR pg.township_code = :t) "
            "GROUP BY pg.code, pg.name, pg.township_code, pg.police_area_code, pg.workers, pg.locked ORDER BY pg.code"),
            conn, geom_col="geom", params={"v": version, "t": township}).rename_geometry("geometry")


def draft_of(engine: sa.Engine, account_id: int, township: str) -> tuple[int, Plan] | None:
    """A planner's kept draft of a township: (the version it started from, its plan), or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT base_version, state FROM plan_draft WHERE account_id = :a AND "
                                   "township_code = :t"), {"a": account_id, "t": township}).fetchone()
        if row is None:
            return None
        base, state = row
        assign = pd.Series(state["assign"])
        ids = assign.index.astype(np.int64)
        faces = gpd.read_postgis(sa.text(_FACES_BY_ID), conn, geom_col="geom", params={"ids": ids.tolist()})
        edges = pd.read_sql(sa.text(_EDGES), conn, params={"ids": ids.tolist()})
    faces["grid"] = assign.set_axis(ids).reindex(faces["face_id"].to_numpy()).to_numpy()
    grids = pd.DataFrame(state["grids"]).set_index("code")
    return base, plan_of(faces.rename_geometry("geometry"), edges, grids)
