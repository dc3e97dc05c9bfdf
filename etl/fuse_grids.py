"""``etl fuse-grids``: fuse the departments' grids into the full-element grid table.

Reads ``grid_source`` and the townships county by county, fuses them with
:func:`gridwatch.geo.grid_fusion.fuse_grids`, checks the result tiles every township,
and writes ``grid`` (upserted by code, so an identical fusion keeps ids),
``grid_lineage`` and a new ``grid_version``. Skipped when neither the sources
nor the fusion settings changed since the last fusion.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import geopandas as gpd
import pandas as pd
import psycopg
import shapely
import sqlalchemy as sa
from tqdm import tqdm

from gridwatch.errors import GridwatchError, InputError
from gridwatch.etl._copy import copy_rows, keys_built_after
from gridwatch.etl.database import pg_connection, pg_transaction
from gridwatch.etl.runlog import RunCounts, freeze_start_up
from gridwatch.geo.grid_fusion import FusionReport, FusionResult, fuse_grids
from gridwatch.geo.topology import check_tiling
from gridwatch.settings import Settings

__all__ = ["fuse_grid_sources"]

# The townships of each county (a fusion chunk).
CHUNKS_SQL = """
SELECT array_agg(code ORDER BY code) FROM command_unit WHERE level = 'township'
GROUP BY coalesce(parent_id, id) ORDER BY min(code)
"""
TOWNSHIPS_SQL = ("SELECT code, ST_AsBinary(geom) FROM command_unit WHERE level = 'township' AND code = ANY(%(codes)s) "
                 "ORDER BY code")
# The sources touching a chunk's townships: driven from the few townships over
# the GiST index of grid_source.
SOURCES_SQL = """
WITH hit AS (
    SELECT DISTINCT s.id FROM command_unit t JOIN grid_source s ON ST_Intersects(s.geom, t.geom)
    WHERE t.level = 'township' AND t.code = ANY(%(codes)s)
)
SELECT s.department, s.source_code, s.name, s.township_code, s.households, s.population, ST_AsBinary(s.geom)
FROM grid_source s JOIN hit USING (id)
ORDER BY s.department, s.source_code
"""
# Departments by the area their grids cover, largest first.
RANKING_SQL = """
SELECT department FROM grid_source GROUP BY department
ORDER BY sum(ST_Area(geom::geography)) DESC, department
"""


def _digest(conn: sa.Connection, settings: Settings) -> str:
    """A fingerprint of the fusion's inputs: sources, townships and settings."""
    data = conn.execute(sa.text(
        "SELECT md5(coalesce(string_agg(md5(department || source_code || ST_AsEWKB(geom)::text "
        "|| coalesce(households, -1) || coalesce(population, -1)), '' ORDER BY department, source_code), '')) "
        "|| (SELECT md5(coalesce(string_agg(code || ST_AsEWKB(geom)::text, '' ORDER BY code), '')) "
        "    FROM command_unit WHERE level = 'township') FROM grid_source"
    )).scalar_one()
    knobs = json.dumps([settings.grid_priority, settings.sliver_area_m2])
    return hashlib.sha256((data + knobs).encode()).hexdigest()


def fuse_grid_sources(
    engine: sa.Engine, *, settings: Settings, counts: RunCounts, force: bool = False, progress: bool = False
) -> FusionReport | None:
    """Fuse ``grid_source`` into ``grid``, county by county; None when already up to date.

    A fused grid never crosses a township, so each county's townships are fused
    with the sources that touch them, on their own: memory and time grow with
    the county, not the province. The departments are ranked once for all
    (``settings.grid_priority``, then by the area their grids cover) so every
    county settles overlaps the same way.
    """
    with engine.connect() as conn:
        digest = _digest(conn, settings)
        last = conn.execute(sa.text("SELECT source_digest FROM grid_version ORDER BY version DESC LIMIT 1")).scalar()
        if last == digest and not force:
            return None
        ranking = list(settings.grid_priority) + [
            d for d in conn.execute(sa.text(RANKING_SQL)).scalars() if d not in settings.grid_priority
        ]
        chunks = conn.execute(sa.text(CHUNKS_SQL)).scalars().all()
        total_sources = conn.execute(sa.text("SELECT count(*) FROM grid_source")).scalar_one()
    if not total_sources:
        raise InputError("there are no departmental grids (grid_source) to fuse: load them first")
    if not chunks:
        raise InputError("there are no townships to fuse grids into: load the command units first")
    results = [r for r in _fuse_counties(engine, chunks, settings=settings, ranking=ranking, progress=progress)
               if r is not None]
    grids = pd.concat([r.grids for r in results], ignore_index=True)
    lineage = pd.concat([r.lineage for r in results], ignore_index=True)
    report = _merged([r.report for r in results], sources=total_sources)
    counts.rows_in += total_sources
    counts.rows_loaded += len(grids)
    _write(engine, grids, lineage, report, digest)
    return report


def _fuse_counties(engine: sa.Engine, chunks: list[list[str]], *, settings: Settings, ranking: list[str],
                   progress: bool) -> Iterator[FusionResult | None]:
    """Each county's fusion, in the order of ``chunks``: in ``settings.fusion_processes`` processes side
    by side (each county is read here and fused in one of them, a few counties ahead at most), or
    here when there is one process or one county."""
    read = (_county(engine, codes) for codes in chunks)
    bar = tqdm(total=len(chunks), desc="fusing grids", unit="county", disable=not progress)
    fuse = functools.partial(_fuse_county, ranking=ranking, sliver_area_m2=settings.sliver_area_m2)
    processes = min(settings.fusion_processes, len(chunks))
    with bar:
        if processes == 1:
            for county in read:
                yield fuse(*county)
                bar.update()
            return
        with _pool(processes) as pool:
            pending: collections.deque[Future] = collections.deque()
            for county in read:
                pending.append(pool.submit(fuse, *county))
                if len(pending) > processes:
                    yield pending.popleft().result()
                    bar.update()
            while pending:
                yield pending.popleft().result()
                bar.update()


def _process_started() -> None:
    """A fusion process, this module imported (and with it geopandas and shapely) to unpickle this
    function: what start-up made is left out of the collector's passes."""
    freeze_start_up()


@contextlib.contextmanager
def _pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """Fresh processes for the counties' fusions; one dying (out of memory, killed) is a clear error."""
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_process_started) as pool:
            yield pool
    except BrokenProcessPool:
        raise GridwatchError(
            "a grid fusion process died (out of memory or killed): run again, with fewer processes "
            "if memory is short (GRIDWATCH_FUSION_PROCESSES)") from None


def _county(engine: sa.Engine, codes: list[str]) -> tuple[list[str], gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A county's townships and the grid sources touching them."""
    with pg_connection(engine) as conn:
        return codes, _frame(conn, TOWNSHIPS_SQL, codes), _frame(conn, SOURCES_SQL, codes)


def _frame(conn: psycopg.Connection, query: str, codes: list[str]) -> gpd.GeoDataFrame:
    """``query``'s rows (its last column WKB) for ``codes``, read in binary: a GeoDataFrame in lon/lat."""
    cursor = conn.execute(query, {"codes": codes}, binary=True)
    names = [column.name for column in cursor.description]
    frame = pd.DataFrame(cursor.fetchall(), columns=names)
    geometry = shapely.from_wkb(frame.pop(names[-1]).to_numpy())
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=4326)


def _fuse_county(codes: list[str], townships: gpd.GeoDataFrame, sources: gpd.GeoDataFrame, *,
                 ranking: list[str], sliver_area_m2: float) -> FusionResult | None:
    """One county's fused grids, checked to tile its townships (None: no sources touch it)."""
    if sources.empty:
        return None
    result = fuse_grids(sources, townships, priority=ranking, sliver_area_m2=sliver_area_m2)
    violations = check_tiling(result.grids, townships, parent_key="township_code")
    if violations:
        kinds = pd.Series([v.kind for v in violations]).value_counts().to_dict()
        raise InputError(f"the fused grids do not tile townships {codes}: {kinds}")
    return result


def _merged(reports: list[FusionReport], *, sources: int) -> FusionReport:
    """One report for all counties: counts and areas added up."""
    merged = dataclasses.replace(reports[0], sources=sources)
    for field in dataclasses.fields(FusionReport):
        first = getattr(reports[0], field.name)
        if field.name == "sources" or isinstance(first, (str, list)):
            continue
        if isinstance(first, dict):
            total: dict = {}
            for r in reports:
                for key, value in getattr(r, field.name).items():
                    total[key] = total.get(key, 0) + value
            setattr(merged, field.name, total)
        else:
            setattr(merged, field.name, sum(getattr(r, field.name) for r in reports))
    return merged


def _write(engine: sa.Engine, grids: gpd.GeoDataFrame, lineage: pd.DataFrame, report: FusionReport, digest: str) -> None:
    stage = pd.DataFrame({
        "code": grids["code"].to_numpy(),
        "name": grids["name"].to_numpy(),
        "township_code": grids["township_code"].to_numpy(),
        "households": grids["households"].to_numpy(),
        "population": grids["population"].to_numpy(),
        "wkb": shapely.to_wkb(grids.geometry.values),
    })
    links = lineage[["grid_code", "department", "source_code", "share"]]
    with pg_transaction(engine) as conn:
        conn.execute(
            "CREATE TEMP TABLE stage_grid (code text, name text, township_code text, households float8, "
            "population float8, wkb bytea) ON COMMIT DROP"
        )
        conn.execute(
            "CREATE TEMP TABLE stage_lineage (grid_code text, department text, source_code text, share float8) ON COMMIT DROP"
        )
        copy_rows(conn, "stage_grid", stage)
        copy_rows(conn, "stage_lineage", links)
        version = conn.execute(
            "INSERT INTO grid_version (version, author, note, source_digest) "
            "SELECT coalesce(max(version), 0) + 1, 'etl fuse-grids', %s, %s FROM grid_version RETURNING version",
            (json.dumps(dataclasses.asdict(report), ensure_ascii=False, default=str), digest),
        ).fetchone()[0]
        conn.execute("DELETE FROM grid WHERE code NOT IN (SELECT code FROM stage_grid)")
        # Each grid lies in exactly one police area: the one holding its inner point.
        conn.execute(
            """
            INSERT INTO grid (code, name, township_id, households, population, version, geom, police_area_id)
            SELECT s.code, s.name, t.id, round(s.households)::int, round(s.population)::int, %s, g.geom,
                   (SELECT p.id FROM police_area p WHERE ST_Contains(p.geom, ST_PointOnSurface(g.geom)) LIMIT 1)
            FROM stage_grid s JOIN command_unit t ON t.code = s.township_code AND t.level = 'township',
                 LATERAL (SELECT ST_Multi(ST_SetSRID(ST_GeomFromWKB(s.wkb), 4326)) AS geom) g
            ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, township_id = EXCLUDED.township_id,
                households = EXCLUDED.households, population = EXCLUDED.population,
                version = EXCLUDED.version, geom = EXCLUDED.geom, police_area_id = EXCLUDED.police_area_id
            """,
            (version,),
        )
        conn.execute("TRUNCATE grid_lineage")
        with keys_built_after(conn, "grid_lineage"):
            conn.execute(
                """
                INSERT INTO grid_lineage (grid_id, source_id, share)
                SELECT g.id, s.id, least(l.share, 1.0) FROM stage_lineage l
                JOIN grid g ON g.code = l.grid_code
                JOIN grid_source s ON s.department = l.department AND s.source_code = l.source_code
                WHERE l.share > 0
                """
            )
