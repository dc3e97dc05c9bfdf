"""Read any department's vector file into a checked EPSG:4326 GeoDataFrame.

Any OGR format (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, ...) via pyogrio;
the layer chosen (or the only one, or the one named like the target); the CRS
declared in the file or given in the manifest, refused when the data cannot
be in it (outside its area of use, or outside the region), naming the CRS the
data was likely written in; the text encoding given, or detected (GB18030/GBK)
for a Shapefile without a .cpg; columns renamed by the manifest's mapping.
Whole-file problems raise :class:`InputError` naming the file; per-row
problems come back as rejected rows with a reason and their feature number.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from gridwatch.errors import InputError
from gridwatch.etl.manifest import TARGETS, FileEntry
from gridwatch.geo.crs_guess import likely_gauss_kruger, lonlat_bounds, outside_area_of_use

__all__ = ["VECTOR_FORMATS", "VectorRead", "read_vector", "open_vector", "choose_layer", "GEOMETRY_KIND"]

# What the vector reader reads, for messages about a file it cannot read.
VECTOR_FORMATS = ("OGR vector formats such as GeoPackage (.gpkg), Shapefile (.shp with .dbf, .shx, .prj), "
                  "GeoJSON, FlatGeobuf (.fgb), KML and GML")

# What geometry each target layer holds.
GEOMETRY_KIND = {
    "command_unit": "polygon", "police_area": "polygon", "grid_source": "polygon", "zone": "polygon",
    "defence_line": "line", "road": "line", "river": "line",
    "checkpoint": "point", "settlement": "point", "port": "point", "sensor": "point",
}
_TYPE_IDS = {
    "polygon": [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON],
    "line": [shapely.GeometryType.LINESTRING, shapely.GeometryType.MULTILINESTRING],
    "point": [shapely.GeometryType.POINT],
}
NUMERIC_FIELDS = {"households", "population", "range_m", "fov_deg", "azimuth_deg", "line_no"}
BOOLEAN_FIELDS = {"staffed", "up"}
_TRUE = {"true", "t", "1", "yes", "y", "是"}
_FALSE = {"false", "f", "0", "no", "n", "否"}


@dataclass
class VectorRead:
    """A file's rows: accepted (EPSG:4326, target field names) and rejected with reasons; each
    frame's index is the feature's 0-based position in the layer."""

    accepted: gpd.GeoDataFrame
    rejected: pd.DataFrame
    reasons: pd.Series
    repaired: int
    rows_in: int

    @property
    def rejected_lines(self) -> np.ndarray:
        """The 1-based feature number of each rejected row."""
        return self.rejected.index.to_numpy() + 1


def detect_encoding(path: Path) -> str | None:
    """The text encoding of a Shapefile's .dbf when no .cpg says it: utf-8 or gb18030."""
    if path.suffix.lower() != ".shp":
        return None
    if path.with_suffix(".cpg").exists() or path.with_suffix(".CPG").exists():
        return None
    dbf = next((p for p in (path.with_suffix(".dbf"), path.with_suffix(".DBF")) if p.exists()), None)
    if dbf is None:
        return None
    raw = dbf.read_bytes()
    try:
        raw.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"


def _unreadable(entry: FileEntry, exc: BaseException) -> InputError:
    return InputError(f"{entry.path}: cannot read it as a vector file ({_first_line(exc)}); "
                      f"etl import reads {VECTOR_FORMATS}")


def choose_layer(entry: FileEntry) -> FileEntry:
    """``entry`` with the layer to read: the one it names, the file's only layer (left unnamed), or
    the layer named like the target; InputError listing the layers otherwise."""
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(entry.path)]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise _unreadable(entry, exc) from None
    if entry.layer is not None:
        if entry.layer not in layers:
            raise InputError(f"{entry.path}: has no layer {entry.layer!r}; its layers are {', '.join(layers)}")
        return entry
    if len(layers) <= 1:
        return entry
    if entry.target in layers:
        return dataclasses.replace(entry, layer=entry.target)
    raise InputError(
        f"{entry.path}: has {len(layers)} layers ({', '.join(layers)}) and none is named {entry.target!r}: "
        "choose one with --source-layer NAME (or 'layer' in the manifest)"
    )


def _open(entry: FileEntry) -> gpd.GeoDataFrame:
    encoding = entry.encoding or detect_encoding(entry.path)
    try:
        # A geometry GEOS cannot build (a one-point line, a two-point ring) is read as missing, so that
        # its row is rejected as "empty or missing geometry" instead of the whole file failing.
        frame = pyogrio.read_dataframe(entry.path, layer=entry.layer, encoding=encoding, on_invalid="ignore")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise _unreadable(entry, exc) from None
    except UnicodeDecodeError:
        raise InputError(
            f"{entry.path}: its text is not in {encoding or 'the declared encoding'}: "
            "give the right encoding (e.g. gbk) in the manifest or with --encoding"
        ) from None
    return frame


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _crs(entry: FileEntry, frame: gpd.GeoDataFrame) -> CRS:
    if entry.crs:
        try:
            return CRS.from_user_input(entry.crs)
        except CRSError:
            raise InputError(f"{entry.path}: CRS {entry.crs!r} is not a known CRS (e.g. EPSG:4542)") from None
    if frame.crs is None:
        raise InputError(
            f"{entry.path}: the file declares no CRS (a Shapefile without .prj?): "
            "give it in the manifest ('crs') or with --crs EPSG:NNNN"
        )
    return CRS.from_user_input(frame.crs)


def _likely_crs(bounds: np.ndarray, given: CRS, declared: CRS | None,
                region: tuple[float, float, float, float] | None) -> str:
    """What to tell about the CRS the numbers were likely written in."""
    candidates = [] if declared is None or declared.equals(given) or not _plausible(bounds, declared, region) \
        else [declared]
    candidates += [c for c in likely_gauss_kruger(bounds, region=region) if not c.equals(given) and c not in candidates]
    if not candidates:
        return "check its CRS"
    if len(candidates) > 3:
        codes = ", ".join(c.to_string() for c in candidates)
        return (f"it may be any of the CGCS2000 Gauss-Kruger CRSs without a zone number in the easting ({codes}): "
                "give the one of its central meridian with --crs (or 'crs' in the manifest)")
    named = " or ".join(f"{c.to_string()} ({c.name})" for c in candidates)
    return f"it is likely in {named}: give --crs {candidates[0].to_string()} (or 'crs' in the manifest)"


def _plausible(bounds: np.ndarray, crs: CRS, region: tuple[float, float, float, float] | None) -> bool:
    lonlat = lonlat_bounds(bounds, crs)
    return lonlat is not None and not outside_area_of_use(bounds, crs) and (region is None or _meets(lonlat, region))


def _meets(lonlat: tuple[float, float, float, float], region: tuple[float, float, float, float]) -> bool:
    """Whether lon/lat bounds meet the region widened by a degree."""
    return shapely.intersects(shapely.box(*region).buffer(1.0), shapely.box(*lonlat))


def _check_coordinates(entry: FileEntry, frame: gpd.GeoDataFrame, crs: CRS,
                       region: tuple[float, float, float, float] | None) -> None:
    """Raise when the numbers cannot be in the CRS they are read with: degrees out of range,
    metres read as degrees or degrees as metres, data outside the CRS's area of use or the region."""
    if frame.geometry.isna().all():
        return
    bounds = frame.total_bounds
    minx, miny, maxx, maxy = bounds
    if not np.isfinite(bounds).all():
        return
    declared = CRS.from_user_input(frame.crs) if frame.crs is not None else None
    looks_degrees = -180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90
    looks_swapped = -90 <= minx and maxx <= 90 and -180 <= miny and maxy <= 180
    if crs.is_geographic and not looks_degrees and looks_swapped:
        raise InputError(
            f"{entry.path}: latitudes above 90 (e.g. {maxy:.4f}): the data lies in the region only with "
            "latitude and longitude swapped: fix the axis order (x = longitude, y = latitude)"
        )
    if crs.is_geographic and not looks_degrees:
        raise InputError(
            f"{entry.path}: coordinates like ({minx:.0f}, {miny:.0f}) are projected metres, but the CRS "
            f"{crs.to_string()} is in degrees: {_likely_crs(bounds, crs, declared, region)}"
        )
    if crs.is_projected and looks_degrees and max(abs(maxx - minx), abs(maxy - miny)) < 360:
        raise InputError(
            f"{entry.path}: coordinates like ({minx:.4f}, {miny:.4f}) look like degrees, but the CRS "
            f"{crs.to_string()} is projected: give the right CRS (e.g. --crs EPSG:4326)"
        )
    lonlat = lonlat_bounds(bounds, crs)
    where = "nowhere on Earth" if lonlat is None else f"at {_where(lonlat)}"
    if lonlat is None or outside_area_of_use(bounds, crs):
        area = crs.area_of_use
        used = f" ({area.name}: {_where(area.bounds)})" if area else ""
        raise InputError(
            f"{entry.path}: read as {crs.to_string()} ({crs.name}) the data lies {where}, outside where that CRS "
            f"is used{used}: {_likely_crs(bounds, crs, declared, region)}"
        )
    if region is None or _meets(lonlat, region):
        return
    if crs.is_geographic and _meets((lonlat[1], lonlat[0], lonlat[3], lonlat[2]), region):
        raise InputError(
            f"{entry.path}: the data lies in the region only with latitude and longitude swapped: "
            "fix the axis order (x = longitude, y = latitude) or the CRS"
        )
    raise InputError(
        f"{entry.path}: read as {crs.to_string()} ({crs.name}) the data lies {where}, outside the region "
        f"({_where(region)}): {_likely_crs(bounds, crs, declared, region)}"
    )


def _where(lonlat: tuple[float, float, float, float] | None) -> str:
    if lonlat is None:
        return "nowhere on Earth"
    w, s, e, n = lonlat
    return f"lon {w:.3f}-{e:.3f}, lat {s:.3f}-{n:.3f}"


def _rename(entry: FileEntry, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    required, optional = TARGETS[entry.target]
    lower = {c.lower(): c for c in frame.columns}
    mapping: dict[str, str] = {}
    missing = []
    for field in (*required, *optional):
        column = entry.source_column(field)
        actual = column if column in frame.columns else lower.get(column.lower())
        if actual is not None:
            mapping[actual] = field
        elif field in required:
            missing.append(f"{field} (column {column!r})")
    if missing:
        available = [c for c in frame.columns if c != "geometry"]
        raise InputError(
            f"{entry.path}: missing required columns {', '.join(missing)}; the file has {available}: "
            "map them in the manifest's 'columns'"
        )
    extra = [c for c in frame.columns if c not in mapping and c != frame.geometry.name]
    shadowed = [c for c in extra if c in mapping.values()]  # a column named like a field mapped elsewhere
    out = frame.drop(columns=shadowed).rename(columns=mapping)
    extra = [c for c in extra if c not in shadowed]
    out.attrs["extra_columns"] = extra
    return out


def open_vector(entry: FileEntry, *, bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
    """A vector file's rows as they are, in EPSG:4326: its encoding and CRS read or given, its
    coordinates checked against the CRS (and the region ``bbox``)."""
    raw = _open(entry)
    crs = _crs(entry, raw)
    _check_coordinates(entry, raw, crs, bbox)
    return raw.set_crs(crs, allow_override=True).to_crs(4326)


def read_vector(entry: FileEntry, *, bbox: tuple[float, float, float, float] | None = None) -> VectorRead:
    """Read, reproject to EPSG:4326, map columns and check every row of a vector file."""
    kind = GEOMETRY_KIND.get(entry.target)
    if kind is None:
        raise InputError(f"{entry.path}: target {entry.target!r} is not a vector layer")
    frame = _rename(entry, open_vector(entry, bbox=bbox))

    reasons = pd.Series("", index=frame.index, dtype=object)
    geom = frame.geometry.values
    reasons[frame.geometry.isna().to_numpy() | shapely.is_empty(geom)] = "empty or missing geometry"

    required, _ = TARGETS[entry.target]
    for field in required:
        blank = frame[field].isna() | (frame[field].astype(str).str.strip() == "")
        reasons[blank & (reasons == "")] = f"missing {field}"
    for field in NUMERIC_FIELDS & set(frame.columns):
        numbers = pd.to_numeric(frame[field], errors="coerce")
        bad = numbers.isna() & frame[field].notna()
        reasons[bad & (reasons == "")] = f"{field} is not a number"
        frame[field] = numbers
    for field in BOOLEAN_FIELDS & set(frame.columns):
        text = frame[field].astype(str).str.strip().str.lower()
        bad = ~text.isin(_TRUE | _FALSE) & frame[field].notna()
        reasons[bad & (reasons == "")] = f"{field} is not true/false"
        frame[field] = text.isin(_TRUE)

    invalid = ~shapely.is_valid(geom) & (reasons == "").to_numpy()
    repaired = int(invalid.sum())
    if repaired:
        fixed = shapely.make_valid(geom[invalid])
        geom = geom.copy()
        geom[invalid] = _keep_kind(fixed, kind)
    wrong = ~np.isin(shapely.get_type_id(geom), _TYPE_IDS[kind])
    reasons[wrong & (reasons == "").to_numpy()] = f"geometry is not a {kind}"

    frame = frame.set_geometry(gpd.GeoSeries(geom, index=frame.index, crs=4326))
    ok = (reasons == "").to_numpy()
    rejected = pd.DataFrame(frame.loc[~ok].drop(columns=frame.geometry.name))
    rejected["geometry_wkt"] = shapely.to_wkt(frame.geometry.values[~ok], rounding_precision=7)
    accepted = frame.loc[ok].copy()
    if kind == "polygon":
        accepted = accepted.set_geometry(shapely.force_2d(_multi(accepted.geometry.values)))
    elif kind == "line":
        accepted = accepted.set_geometry(shapely.force_2d(_multi_line(accepted.geometry.values)))
    else:
        accepted = accepted.set_geometry(shapely.force_2d(accepted.geometry.values))
    accepted = accepted.set_crs(4326, allow_override=True)
    return VectorRead(accepted, rejected, reasons[~ok], repaired, len(frame))


def _keep_kind(geoms: np.ndarray, kind: str) -> np.ndarray:
    """From make_valid's output keep only the parts of the wanted kind (else empty)."""
    if kind == "point":
        return geoms
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = np.isin(shapely.get_type_id(parts), _TYPE_IDS[kind])
    out = np.array([shapely.GeometryCollection()] * len(geoms), dtype=object)
    if keep.any():
        merged = pd.Series(parts[keep]).groupby(index[keep]).agg(lambda s: shapely.union_all(s.to_numpy()))
        out[merged.index.to_numpy()] = merged.to_numpy()
    return out


def _multi(geoms: np.ndarray) -> np.ndarray:
    polys = shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON
    out = geoms.copy()
    out[polys] = shapely.multipolygons(np.asarray(geoms[polys], dtype=object).reshape(-1, 1)) if polys.any() else out[polys]
    return out


def _multi_line(geoms: np.ndarray) -> np.ndarray:
    lines = shapely.get_type_id(geoms) == shapely.GeometryType.LINESTRING
    out = geoms.copy()
    out[lines] = shapely.multilinestrings(np.asarray(geoms[lines], dtype=object).reshape(-1, 1)) if lines.any() else out[lines]
    return out
