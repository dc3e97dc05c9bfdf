"""The planner's writes: building blocks, saved versions, drafts and publishing.

- :func:`build_faces` cuts every township of the published grids into faces
  (:func:`gridwatch.geo.plan_faces.township_faces`) once, and records the published
  version's assignment of faces to grids.
- :func:`save_version` stores a planner's township as a new version of the whole plan
  (the other townships as in the latest version). It is refused with :class:`PlanConflict`
  when another version changed that township after the one the planner started from:
  optimistic locking, nothing is overwritten.
- :func:`publish` makes a version the grid layer: changed grids only are rewritten, with
  their lineage, the fixes and incidents inside them and their coverage; rolling back is
  publishing an earlier version.

Every save, publish and draft discard goes to the audit log, as the signed-in account.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from tqdm import tqdm

from gridwatch.errors import InputError
from gridwatch.etl._copy import copy_rows, create_staging
from gridwatch.etl.accounts import audit
from gridwatch.etl.coverage import derive_coverage
from gridwatch.etl.database import pg_transaction
from gridwatch.geo.plan import GRID_COLUMNS, Plan
from gridwatch.geo.plan_faces import Blocks, township_faces
from gridwatch.geo.plan_rules import Rules
from gridwatch.settings import Settings

__all__ = ["PlanConflict", "PublishReport", "rules_of", "published_version", "build_faces", "store_faces", "save_version", "publish",
           "save_draft", "drop_draft", "draft_state", "grid_records", "PLAN_LOCK"]

PLAN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('gridwatch.plan'))"


class PlanConflict(InputError):
    """A save based on a version older than another's change to the same township."""


@dataclass(frozen=True)
class PublishReport:
    """What a publish changed in the grid layer."""

    version: int
    added: int
    removed: int
    changed: int
    unchanged: int


def rules_of(settings: Settings) -> Rules:
    """The plan rules from the settings."""
    return Rules(balance_tolerance=settings.plan_balance_tolerance, workers_per_10k=settings.plan_workers_per_10k,
                 min_compactness=settings.plan_min_compactness, sliver_area_m2=settings.sliver_area_m2,
                 sliver_width_m=settings.plan_sliver_width_m)


# --------------------------------------------------------------------------- #
# faces
# --------------------------------------------------------------------------- #

_TOWNSHIPS_TO_BUILD = """
SELECT t.code, ST_AsBinary(t.geom) AS wkb FROM command_unit t
WHERE t.level = 'township' AND EXISTS (SELECT 1 FROM grid g WHERE g.township_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM plan_assignment a JOIN plan_face f ON f.id = a.face_id
                  WHERE a.version = %(version)s AND f.township_code = t.code)
ORDER BY t.code
"""


def published_version(conn: sa.Connection) -> int | None:
    """The version the grid layer shows (the one published last)."""
    return conn.execute(sa.text(
        "SELECT version FROM grid_version WHERE published_at IS NOT NULL ORDER BY published_at DESC, version DESC "
        "LIMIT 1")).scalar()


def build_faces(engine: sa.Engine, *, settings: Settings, progress: bool = False) -> int:
    """Cut each township of the published grid layer into faces; returns the townships built.

    The grid layer's version (the last fusion, or the last publish) gets its assignment of
    faces to grids. Grids loaded without a version get one (``grid table``). Idempotent:
    a township already built for the version is left alone.
    """
    with engine.begin() as conn:
        conn.execute(sa.text(PLAN_LOCK))
        version = published_version(conn)
        if version is None:
            last = conn.execute(sa.text("SELECT max(version) FROM grid_version")).scalar()
            if last is None:
                if not conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM grid)")).scalar():
                    raise InputError("there are no grids to plan: load or fuse them first")
                conn.execute(sa.text("INSERT INTO grid_version (version, author, note) VALUES (1, 'grid table', "
                                     "'the grids as loaded')"))
                last = 1
            conn.execute(sa.text("UPDATE grid_version SET published_at = now() WHERE version = :v"), {"v": last})
            version = last
    with engine.connect() as conn:
        todo = conn.exec_driver_sql(_TOWNSHIPS_TO_BUILD, {"version": version}).fetchall()
    for code, wkb in tqdm(todo, desc="cutting townships into faces", unit="township", disable=not (progress and todo)):
        _build_township(engine, version, code, shapely.from_wkb(wkb), settings)
    return len(todo)


def _build_township(engine: sa.Engine, version: int, code: str, township: shapely.Geometry,
                    settings: Settings) -> None:
    with engine.connect() as conn:
        params = {"code": code}
        grids = gpd.read_postgis(sa.text(
            "SELECT g.code, g.name, g.households, g.population, g.workers, p.code AS police_area, g.geom "
            "FROM grid g JOIN command_unit t ON t.id = g.township_id LEFT JOIN police_area p ON p.id = g.police_area_id "
            "WHERE t.code = :code ORDER BY g.code"), conn, geom_col="geom", params=params)
        areas = gpd.read_postgis(sa.text(
            "SELECT p.code, p.geom FROM police_area p, command_unit t WHERE t.code = :code "
            "AND ST_Intersects(p.geom, t.geom) AND ST_Area(ST_Intersection(p.geom, t.geom)) > 0"),
            conn, geom_col="geom", params=params)
        sources = gpd.read_postgis(sa.text(
            "SELECT s.id AS source_id, s.households, s.population, s.geom FROM grid_source s, command_unit t "
            "WHERE t.code = :code AND ST_Intersects(s.geom, t.geom)"), conn, geom_col="geom", params=params)
    faces, (i, j, length) = township_faces(township, grids, areas, sources, township_code=code,
                                           sliver_area_m2=settings.sliver_area_m2)
    with pg_transaction(engine) as conn:
        conn.execute(PLAN_LOCK)
        built = conn.execute("SELECT EXISTS (SELECT 1 FROM plan_assignment a JOIN plan_face f ON f.id = a.face_id "
                             "WHERE a.version = %s AND f.township_code = %s)", (version, code)).fetchone()[0]
        if built:  # by another planner's first visit, meanwhile
            return
        ids = _insert_faces(conn, faces)
        copy_rows(conn, "plan_face_edge", pd.DataFrame({"a": ids[i], "b": ids[j], "length_m": length}))
        copy_rows(conn, "plan_assignment", pd.DataFrame({"version": version, "face_id": ids, "grid_code": faces["grid"]}))
        grid_rows = pd.DataFrame({
            "version": version, "code": grids["code"], "name": grids["name"], "township_code": code,
            "police_area_code": grids["police_area"],
            "workers": pd.to_numeric(grids["workers"], errors="coerce").fillna(0).astype(int),
            "locked": False})
        conn.execute("DELETE FROM plan_grid WHERE version = %s AND township_code = %s", (version, code))
        copy_rows(conn, "plan_grid", grid_rows)
        conn.execute(
            "UPDATE plan_face f SET workload = (SELECT count(*) FROM incident i WHERE ST_Intersects(f.geom, i.geom) "
            "AND i.reported_at > now() - make_interval(days => %s)) WHERE f.id = ANY(%s)",
            (settings.plan_workload_days, ids.tolist()))


def _insert_faces(conn, faces: gpd.GeoDataFrame) -> np.ndarray:
    """Insert faces (columns of :data:`gridwatch.geo.plan_faces.FACE_COLUMNS`); their new ids, in order."""
    ids = np.array([r[0] for r in conn.execute(
        "SELECT nextval('plan_face_id_seq') FROM generate_series(1, %s)", (len(faces),))], dtype=np.int64)
    rows = pd.DataFrame({
        "id": ids, "township_code": faces["township"].to_numpy(), "police_area_code": faces["police_area"].to_numpy(),
        "source_id": pd.array(faces["source"].where(faces["source"] >= 0), dtype="Int64"),
        **{c: faces[c].to_numpy(dtype=float) for c in ("households", "population", "area_m2", "perimeter_m")},
        "workload": (faces["workload"] if "workload" in faces else pd.Series(0.0, index=faces.index)).to_numpy(float),
        "geom": shapely.to_wkb(faces.geometry.to_numpy()),
    })
    create_staging(conn, "stage_face", columns="id bigint, township_code text, police_area_code text, "
                   "source_id integer, households float8, population float8, area_m2 float8, perimeter_m float8, "
                   "workload float8, geom bytea")
    copy_rows(conn, "stage_face", rows)
    conn.execute(
        "INSERT INTO plan_face (id, township_code, police_area_code, source_id, households, population, area_m2, "
        "perimeter_m, workload, geom) SELECT id, township_code, police_area_code, source_id, households, population, "
        "area_m2, perimeter_m, workload, ST_Multi(ST_SetSRID(ST_GeomFromWKB(geom), 4326)) FROM stage_face")
    conn.execute("DROP TABLE stage_face")
    return ids


def _store_new_faces(conn, plan: Plan) -> np.ndarray:
    """Store the faces an edit made (ids below zero) with their edges; every face's id, in order."""
    ids = plan.faces["face_id"].to_numpy(dtype=np.int64).copy()
    fresh = ids < 0
    if fresh.any():
        ids[fresh] = _insert_faces(conn, plan.faces[fresh].reset_index(drop=True))
        i, j, length = plan.blocks.edges
        touched = fresh[i] | fresh[j]
        copy_rows(conn, "plan_face_edge", pd.DataFrame(
            {"a": np.minimum(ids[i], ids[j])[touched], "b": np.maximum(ids[i], ids[j])[touched],
             "length_m": length[touched]}).drop_duplicates(["a", "b"]))
    return ids


def store_faces(engine: sa.Engine, plan: Plan) -> Plan:
    """The plan with the faces its edits made stored (so a draft can be kept); new ids in place."""
    if not (plan.faces["face_id"].to_numpy() < 0).any():
        return plan
    with pg_transaction(engine) as conn:
        ids = _store_new_faces(conn, plan)
    return Plan(Blocks(plan.faces.assign(face_id=ids), plan.blocks.edges), plan.grid, plan.grids)


# --------------------------------------------------------------------------- #
# versions
# --------------------------------------------------------------------------- #


def save_version(engine: sa.Engine, plan: Plan, *, township: str, base_version: int, author: str, message: str,
                 address: str | None = None) -> int:
    """Store ``plan`` (one township's faces and grids) as a new version; returns its number.

    Raises :class:`PlanConflict` when a version after ``base_version`` changed ``township``.
    Faces made by edits (ids below zero) are stored first and get their ids.
    """
    message = " ".join(str(message or "").split())[:500]
    if not message:
        raise InputError("say in a message what this version changes")
    with pg_transaction(engine) as conn:
        conn.execute(PLAN_LOCK)
        clash = conn.execute(
            "SELECT version, author, created_at FROM grid_version WHERE version > %s "
            "AND (townships IS NULL OR %s = ANY(townships)) ORDER BY version LIMIT 1", (base_version, township)
        ).fetchone()
        if clash:
            raise PlanConflict(
                f"township {township} was changed in version {clash[0]} by {clash[1]} at "
                f"{clash[2]:%Y-%m-%d %H:%M} UTC, after version {base_version} you started from: "
                "your draft is kept; reload the township and redo your edits there")
        head = conn.execute("SELECT max(version) FROM plan_assignment").fetchone()[0]
        if head is None:
            raise InputError("the plan has no faces yet: open the planner once to build them")
        ids = _store_new_faces(conn, plan)
        version = conn.execute(
            "INSERT INTO grid_version (version, author, note, base_version, townships) "
            "SELECT coalesce(max(version), 0) + 1, %s, %s, %s, %s FROM grid_version RETURNING version",
            (author, message, base_version, [township])).fetchone()[0]
        conn.execute(
            "INSERT INTO plan_assignment (version, face_id, grid_code) SELECT %s, a.face_id, a.grid_code "
            "FROM plan_assignment a JOIN plan_face f ON f.id = a.face_id WHERE a.version = %s AND f.township_code <> %s",
            (version, head, township))
        conn.execute(
            "INSERT INTO plan_grid (version, code, name, township_code, police_area_code, workers, locked) "
            "SELECT %s, code, name, township_code, police_area_code, workers, locked FROM plan_grid "
            "WHERE version = %s AND township_code <> %s", (version, head, township))
        copy_rows(conn, "plan_assignment", pd.DataFrame({"version": version, "face_id": ids, "grid_code": plan.grid}))
        grids = plan.grids.reset_index()
        copy_rows(conn, "plan_grid", pd.DataFrame({
            "version": version, "code": grids["code"], "name": grids["name"], "township_code": grids["township"],
            "police_area_code": grids["police_area"],
            "workers": pd.to_numeric(grids["workers"], errors="coerce").fillna(0).astype(int),
            "locked": grids["locked"].astype(bool)}))
        audit(conn, author, "plan.save", address=address, version=version, township=township, base=base_version,
              message=message, grids=len(grids))
    return version


_PUBLISH_GRIDS = """
CREATE TEMP TABLE pub_grid ON COMMIT DROP AS
SELECT pg.code, pg.name, t.id AS township_id, p.id AS police_area_id, pg.workers,
       round(coalesce(sum(f.households), 0))::int AS households, round(coalesce(sum(f.population), 0))::int AS population,
       ST_Multi(ST_CollectionExtract(ST_Union(f.geom, 1e-9), 3)) AS geom
FROM plan_grid pg
JOIN plan_assignment a ON a.version = pg.version AND a.grid_code = pg.code
JOIN plan_face f ON f.id = a.face_id
JOIN command_unit t ON t.code = pg.township_code AND t.level = 'township'
LEFT JOIN police_area p ON p.code = pg.police_area_code
WHERE pg.version = %(version)s
GROUP BY pg.code, pg.name, t.id, p.id, pg.workers
"""


def publish(engine: sa.Engine, version: int, *, author: str, settings: Settings, address: str | None = None,
            as_of: datetime | None = None) -> PublishReport:
    """Make ``version`` the grid layer; only the grids it changes are rewritten (with their
    lineage, fixes, incidents and coverage, judged as of ``as_of``, default now)."""
    now = as_of or datetime.now(timezone.utc)
    lookback_h = settings.coverage_lookback_h
    with pg_transaction(engine) as conn:
        conn.execute(PLAN_LOCK)
        if not conn.execute("SELECT EXISTS (SELECT 1 FROM plan_grid WHERE version = %s)", (version,)).fetchone()[0]:
            raise InputError(f"version {version} is not a saved plan (see `gridwatch grids versions`)")
        conn.execute(_PUBLISH_GRIDS, {"version": version})
        gone = [r[0] for r in conn.execute(
            "DELETE FROM grid g WHERE NOT EXISTS (SELECT 1 FROM pub_grid p WHERE p.code = g.code) "
            "RETURNING ST_AsBinary(g.geom)")]
        rows = conn.execute(
            """
            INSERT INTO grid AS g (code, name, township_id, police_area_id, households, population, workers, version, geom)
            SELECT code, name, township_id, police_area_id, households, population, workers, %(version)s, geom
            FROM pub_grid
            ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, township_id = EXCLUDED.township_id,
                police_area_id = EXCLUDED.police_area_id, households = EXCLUDED.households,
                population = EXCLUDED.population, workers = EXCLUDED.workers, version = EXCLUDED.version,
                geom = EXCLUDED.geom
            WHERE NOT ST_Equals(g.geom, EXCLUDED.geom) OR coalesce(g.households, 0) <> EXCLUDED.households
               OR coalesce(g.population, 0) <> EXCLUDED.population OR coalesce(g.workers, 0) <> EXCLUDED.workers
               OR g.police_area_id IS DISTINCT FROM EXCLUDED.police_area_id OR g.name IS DISTINCT FROM EXCLUDED.name
               OR g.township_id IS DISTINCT FROM EXCLUDED.township_id
            RETURNING g.id, (xmax = 0) AS added
            """, {"version": version}).fetchall()
        ids, added = [r[0] for r in rows], sum(bool(r[1]) for r in rows)
        total = conn.execute("SELECT count(*) FROM pub_grid").fetchone()[0]
        conn.execute("UPDATE grid SET version = %s WHERE version <> %s", (version, version))
        _follow_changed_grids(conn, ids, gone, since=now, lookback_h=lookback_h)
        conn.execute("UPDATE grid_version SET published_at = clock_timestamp() WHERE version = %s", (version,))
        report = PublishReport(version=version, added=int(added), removed=len(gone),
                               changed=len(ids) - int(added), unchanged=int(total) - len(ids))
        audit(conn, author, "plan.publish", address=address, **report.__dict__)
    if ids:
        derive_coverage(engine, settings=settings, as_of=now, grid_ids=ids)
    return report


def _follow_changed_grids(conn, ids: list[int], gone_wkb: list[bytes], *, since: datetime, lookback_h: float) -> None:
    """Lineage, recent fixes, open incidents and latest positions of the changed grids and removed ground."""
    conn.execute("DELETE FROM grid_lineage WHERE grid_id = ANY(%s)", (ids,))
    conn.execute(
        "INSERT INTO grid_lineage (grid_id, source_id, share) SELECT g.id, s.id, "
        "least(ST_Area(ST_Intersection(g.geom, s.geom)::geography) / ST_Area(g.geom::geography), 1.0) "
        "FROM grid g JOIN grid_source s ON ST_Intersects(g.geom, s.geom) WHERE g.id = ANY(%s) "
        "AND ST_Area(ST_Intersection(g.geom, s.geom)::geography) > 1", (ids,))
    conn.execute(
        "CREATE TEMP TABLE pub_ground ON COMMIT DROP AS SELECT ST_Union(geom) AS geom FROM ("
        "SELECT geom FROM grid WHERE id = ANY(%s) UNION ALL "
        "SELECT ST_SetSRID(ST_GeomFromWKB(w), 4326) FROM unnest(%s::bytea[]) AS w) x", (ids, gone_wkb))
    refit = ("UPDATE {table} t SET grid_id = (SELECT g.id FROM grid g WHERE ST_Intersects(g.geom, t.geom) "
             "ORDER BY g.id LIMIT 1) FROM pub_ground u WHERE ST_Intersects(u.geom, t.geom) {extra}")
    conn.execute(refit.format(table="position", extra="AND t.ts > %s - make_interval(hours => %s)"),
                 (since, int(np.ceil(lookback_h))))
    conn.execute(refit.format(table="unit_latest", extra=""))
    conn.execute(refit.format(table="incident", extra="AND t.status <> 'closed'"))


# --------------------------------------------------------------------------- #
# drafts
# --------------------------------------------------------------------------- #


def draft_state(plan: Plan) -> dict:
    """A plan as a draft's stored state: every face's grid, and the grids' attributes."""
    ids = plan.faces["face_id"].to_numpy(dtype=np.int64)
    if (ids < 0).any():
        raise ValueError("store the faces an edit made first (store_faces)")
    return {"assign": dict(zip(ids.astype(str).tolist(), plan.grid.tolist())), "grids": grid_records(plan.grids)}


def grid_records(grids: pd.DataFrame) -> list[dict]:
    """Grid attributes (indexed by code, :data:`GRID_COLUMNS`) as JSON-ready records, missing values None."""
    grids = grids.reset_index()
    grids["workers"] = pd.to_numeric(grids["workers"], errors="coerce").fillna(0).astype(int)
    grids["locked"] = grids["locked"].astype(bool)
    grids = grids[["code", *GRID_COLUMNS]].astype(object)
    return grids.where(grids.notna(), None).to_dict("records")


def save_draft(engine: sa.Engine, account_id: int, township: str, base_version: int, state: dict) -> None:
    """Keep a planner's unsaved work on a township (one draft per account and township)."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO plan_draft (account_id, township_code, base_version, state) VALUES (:a, :t, :b, :s) "
            "ON CONFLICT (account_id, township_code) DO UPDATE SET base_version = EXCLUDED.base_version, "
            "state = EXCLUDED.state, updated_at = now()"),
            {"a": account_id, "t": township, "b": base_version, "s": json.dumps(state, default=str)})


def drop_draft(engine: sa.Engine, account_id: int, township: str) -> None:
    """Forget a planner's draft of a township (saved, or discarded)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM plan_draft WHERE account_id = :a AND township_code = :t"),
                     {"a": account_id, "t": township})
