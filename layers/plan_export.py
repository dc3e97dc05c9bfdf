"""Export a grid plan version as GeoPackage, GeoJSON or Shapefile.

One row per grid: ``code``, ``name``, ``township`` (code), ``police_ar`` (police area code),
``households``, ``population``, ``workload``, ``workers``, ``locked``, in CGCS2000 (EPSG:4490) or
WGS 84 (EPSG:4326). Field names fit a Shapefile's ten characters, so every format carries the same
ones (:mod:`gridwatch.etl.plan_import` reads them back). GeoPackage and GeoJSON text is UTF-8 (their
formats allow no other); a Shapefile's is UTF-8 or GBK, named in its .cpg.
"""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import sqlalchemy as sa

from gridwatch.errors import InputError
from gridwatch.geo.crs import export_crs, to_export_crs
from gridwatch.layers.plan import version_grids

__all__ = ["FORMATS", "ENCODINGS", "FIELDS", "export_version"]

#: Export formats by name: (OGR driver, file suffix).
FORMATS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson"), "shp": ("ESRI Shapefile", ".shp")}
ENCODINGS = ("utf-8", "gbk")
#: Export field names (a Shapefile allows ten characters) and the plan's names for them.
FIELDS = {"code": "code", "name": "name", "township": "township_code", "police_ar": "police_area_code",
          "households": "households", "population": "population", "workload": "workload", "workers": "workers",
          "locked": "locked"}


def export_version(engine: sa.Engine, version: int, path: Path, *, fmt: str = "gpkg", crs: str = "cgcs2000",
                   encoding: str = "utf-8", township: str | None = None) -> int:
    """Write a version's grids to ``path``; returns the number of grids written."""
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    export_crs(crs)
    if encoding not in ENCODINGS:
        raise InputError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    if encoding != "utf-8" and fmt != "shp":
        raise InputError(f"a {fmt} file is always UTF-8: GBK text is for Shapefiles only")
    grids = version_grids(engine, version, township=township)
    if grids.empty:
        raise InputError(f"version {version} has no grids{f' in township {township}' if township else ''}")
    out = gpd.GeoDataFrame({name: grids[column] for name, column in FIELDS.items()},
                           geometry=grids.geometry.values, crs=4326)
    out = to_export_crs(out, crs)
    out["locked"] = out["locked"].astype(int)
    driver, _ = FORMATS[fmt]
    path = Path(path)
    if path.exists():
        path.unlink()
    options = {"encoding": "GBK" if encoding == "gbk" else "UTF-8"} if fmt == "shp" else {}
    layer = {"layer": f"grids_v{version}"} if fmt == "gpkg" else {}
    pyogrio.write_dataframe(out, path, driver=driver, **layer, **options)
    return len(out)
