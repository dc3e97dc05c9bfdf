"""Byte-deterministic writers: GeoPackage, Shapefile, GeoJSON, CSV and GPX."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyogrio

from ._tracks import Fixes

__all__ = [
    "POSITION_COLUMNS",
    "fixed_gdal_dates",
    "iso_local",
    "write_csv",
    "write_geojson",
    "write_gpkg",
    "write_gpx",
    "write_positions_csv",
    "write_shapefile",
]

POSITION_COLUMNS = ("unit_id", "ts", "lon", "lat", "speed", "heading", "accuracy")
_CHUNK_ROWS = 1_000_000


@contextlib.contextmanager
def fixed_gdal_dates(day: str) -> Iterator[None]:
    """Make GDAL stamp ``day`` (YYYY-MM-DD) instead of the wall clock into GeoPackages."""
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": f"{day}T00:00:00.000Z"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str, crs: str = "EPSG:4326") -> None:
    """Add ``layer`` to the GeoPackage at ``path`` (created if missing)."""
    multi = bool(gdf.geom_type.str.startswith("Multi").any())
    pyogrio.write_dataframe(gdf.to_crs(crs), path, layer=layer, driver="GPKG", promote_to_multi=multi)


def write_shapefile(gdf: gpd.GeoDataFrame, path: Path, *, encoding: str, day: str) -> None:
    """Write a Shapefile with ``encoding`` text and no .cpg (the reader must declare it)."""
    pyogrio.write_dataframe(
        gdf, path, driver="ESRI Shapefile", encoding=encoding.upper(),
        layer_options={"DBF_DATE_LAST_UPDATE": day},
    )
    path.with_suffix(".cpg").unlink(missing_ok=True)


def write_geojson(gdf: gpd.GeoDataFrame, path: Path) -> None:
    """Write GeoJSON in EPSG:4326 with 7 decimals."""
    path.unlink(missing_ok=True)
    pyogrio.write_dataframe(gdf.to_crs("EPSG:4326"), path, driver="GeoJSON",
                            layer_options={"COORDINATE_PRECISION": "7", "RFC7946": "YES"})


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """A small UTF-8 CSV (units, incidents)."""
    df.to_csv(path, index=False, lineterminator="\n")


def iso_local(ts: np.ndarray, offset_s: int, suffix: str) -> np.ndarray:
    """ISO 8601 strings of epoch seconds shifted by ``offset_s``, followed by ``suffix``."""
    text = np.datetime_as_string((ts + offset_s).astype("datetime64[s]"), unit="s")
    return np.strings.add(text, suffix)


def write_positions_csv(path: Path, callsigns: np.ndarray, fixes: Fixes, offset_s: int, offset_text: str) -> None:
    """Write position rows (lon/lat in ``fixes.x``/``fixes.y``) with pyarrow, in chunks.

    ``ts`` is written as local ISO 8601 with ``offset_text`` (e.g. "+08:00").
    """
    names = pa.array(callsigns.astype(str))
    with path.open("wb") as sink:
        sink.write((",".join(POSITION_COLUMNS) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        for start in range(0, len(fixes), _CHUNK_ROWS):
            part = fixes.take(slice(start, start + _CHUNK_ROWS))
            table = pa.table({
                "unit_id": names.take(pa.array(part.unit)),
                "ts": pa.array(iso_local(part.ts, offset_s, offset_text)),
                "lon": np.round(part.x, 6),
                "lat": np.round(part.y, 6),
                "speed": np.round(part.speed.astype(np.float64), 1),
                "heading": part.heading.astype(np.int64),
                "accuracy": np.round(part.accuracy.astype(np.float64), 1),
            })
            pacsv.write_csv(table, sink, options)


def write_gpx(path: Path, callsign: str, ts: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> None:
    """A GPX 1.1 track of one unit, times in UTC ('Z')."""
    parts = ('      <trkpt lat="', np.round(lat, 6).astype(str), '" lon="', np.round(lon, 6).astype(str),
             '"><time>', iso_local(ts, 0, "Z"), "</time></trkpt>")
    points = functools.reduce(np.strings.add, parts)
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="gridwatch sample generator" xmlns="http://www.topografix.com/GPX/1/1">\n'
        f"  <trk>\n    <name>{callsign}</name>\n    <trkseg>\n"
    )
    path.write_text(head + "\n".join(points.tolist()) + "\n    </trkseg>\n  </trk>\n</gpx>\n", encoding="utf-8")
