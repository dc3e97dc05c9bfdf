"""Import an edited grid plan file (an export of :mod:`gridwatch.layers.plan_export`) as drafts.

The file is read in the CRS it declares (a Shapefile's encoding from its .cpg, or guessed). Every
face of the townships it covers goes to the grid whose polygon holds the face's inner point, and the
result becomes the importing account's draft of each township, based on the latest saved version:
the planner sees it, with every problem, when opening the township. Faces no polygon holds (a gap),
polygons holding no face, and features without a code or with a repeated one are reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.plan import grid_records, save_draft
from gridwatch.etl.readers import open_vector

__all__ = ["ImportReport", "import_drafts"]

@dataclass(frozen=True)
class ImportReport:
    """What an import made: drafts by township, and what did not fit."""

    townships: list[str]
    grids: int
    faces_unclaimed: int
    polygons_without_faces: list[str]
    rejected: list[str]


def import_drafts(engine: sa.Engine, path: Path, *, account_id: int, encoding: str | None = None,
                  crs: str | None = None) -> ImportReport:
    """Read an exported (and edited) grid file into the account's drafts of the townships it covers."""
    frame = open_vector(FileEntry(path=Path(path), target="grid_plan", crs=crs, encoding=encoding))
    frame.columns = [str(c).lower() if c != frame.geometry.name else c for c in frame.columns]
    if "code" not in frame.columns:
        raise InputError(f"{path}: has no 'code' column (the grid code of each polygon)")
    polygons = shapely.make_valid(frame.geometry.to_numpy())
    codes = frame["code"].astype("string")
    bad = codes.isna() | (codes.str.strip() == "") | shapely.is_empty(polygons) | pd.isna(polygons)
    dup = codes.duplicated(keep=False) & ~bad
    rejected = [f"feature {n + 1}: no code or no geometry" for n in np.flatnonzero(bad.to_numpy())]
    rejected += [f"feature {n + 1}: code {codes.iloc[n]} appears more than once" for n in np.flatnonzero(dup.to_numpy())]
    keep = ~(bad | dup).to_numpy()
    frame, polygons = frame.loc[keep].reset_index(drop=True), polygons[keep]
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT max(version) FROM plan_assignment")).scalar()
        if version is None:
            raise InputError("the plan has no faces yet: open the planner once to build them")
        faces = pd.read_sql(sa.text(
            "SELECT f.id, f.township_code, ST_AsBinary(ST_PointOnSurface(f.geom)) AS inner FROM plan_face f "
            "JOIN plan_assignment a ON a.face_id = f.id AND a.version = :v WHERE f.township_code IN ("
            "  SELECT DISTINCT township_code FROM plan_face f2 JOIN plan_assignment a2 ON a2.face_id = f2.id "
            "  AND a2.version = :v WHERE ST_Intersects(f2.geom, ST_SetSRID(ST_GeomFromWKB(:box), 4326))) "
            "ORDER BY f.id"), conn, params={"v": version, "box": shapely.to_wkb(shapely.box(*frame.total_bounds))})
        current = pd.read_sql(sa.text(
            "SELECT code, township_code AS township, police_area_code AS police_area, workers, locked, name "
            "FROM plan_grid WHERE version = :v"), conn, params={"v": version}, index_col="code")
    inner = shapely.from_wkb(faces["inner"].to_numpy())
    face, poly = shapely.STRtree(polygons).query(inner, predicate="within")
    first = pd.Series(poly).groupby(face).min()
    grid = np.full(len(faces), None, dtype=object)
    grid[first.index.to_numpy()] = frame["code"].astype(str).to_numpy()[first.to_numpy()]
    used = np.zeros(len(polygons), dtype=bool)
    used[first.to_numpy()] = True
    faces["grid"] = grid
    made, grids_total = [], 0
    for township, mine in faces.groupby("township_code"):  # the few townships of one file
        if mine["grid"].isna().all():
            continue
        codes = pd.unique(mine["grid"].dropna())
        rows = frame.set_index(frame["code"].astype(str)).loc[codes].reset_index(drop=True)
        attrs = _attributes(rows, current, str(township))
        save_draft(engine, account_id, str(township), int(version),
                   {"assign": dict(zip(mine["id"].astype(str), mine["grid"].tolist())),
                    "grids": grid_records(attrs)})
        made.append(str(township))
        grids_total += len(attrs)
    claimed = faces["township_code"].isin(made)
    return ImportReport(made, grids_total, int(faces.loc[claimed, "grid"].isna().sum()),
                        frame["code"].astype(str)[~used].tolist(), rejected)


def _attributes(rows: pd.DataFrame, current: pd.DataFrame, township: str) -> pd.DataFrame:
    """The imported grids' attributes: the file's where it has them, else the current plan's."""
    codes = rows["code"].astype(str).to_numpy()
    known = current.reindex(codes)
    out = pd.DataFrame(index=pd.Index(codes, name="code"))
    out["township"] = township
    out["police_area"] = (rows["police_ar"].astype("string").to_numpy(na_value=None) if "police_ar" in rows
                          else known["police_area"].to_numpy())
    out["workers"] = (pd.to_numeric(rows["workers"], errors="coerce") if "workers" in rows
                      else known["workers"]).fillna(0).astype(int).to_numpy()
    out["locked"] = (pd.to_numeric(rows["locked"], errors="coerce").fillna(0).astype(bool).to_numpy()
                     if "locked" in rows else known["locked"].fillna(False).astype(bool).to_numpy())
    out["name"] = rows["name"].astype("string").to_numpy(na_value=None) if "name" in rows else known["name"].to_numpy()
    return out
