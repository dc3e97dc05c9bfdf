"""Generate the fictional border prefecture used by tests, demos and benchmarks.

Everything is drawn in EPSG:4542 (metres) and delivered as files plus a
``manifest.json`` that tells the ETL what each file holds. Positions end now
by default; the same seed, scale and end give byte-identical files.

Examples
--------
>>> from pathlib import Path
>>> import tempfile
>>> manifest = generate_sample(Path(tempfile.mkdtemp()), seed=1, scale="small", end=fixed_end(1))
>>> manifest.name
'manifest.json'
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from pyproj import Transformer
from tqdm import tqdm

from ._command_units import build_command_units
from ._defence import build_checkpoints, build_defence_lines, build_patrol_road, build_sensors, build_zones
from ._departments import DEPARTMENTS, department_grids
from ._geometry import WORK_CRS
from ._incidents import INCIDENT_COLUMNS, build_incidents
from ._io import (
    POSITION_COLUMNS,
    fixed_gdal_dates,
    write_csv,
    write_geojson,
    write_gpkg,
    write_gpx,
    write_positions_csv,
    write_shapefile,
)
from ._names import NameMaker
from ._region import build_outline
from ._roads import build_rivers, build_roads
from ._scale import SCALES, scale_spec
from ._tracks import (
    LOCAL_OFFSET_S,
    UNIT_COLUMNS,
    Fixes,
    add_noise,
    build_units,
    plan_patrols,
    silence_units,
    simulate_positions,
)

__all__ = ["MANIFEST_FORMAT", "SCALES", "TIMEZONE", "fixed_end", "generate_sample"]

MANIFEST_FORMAT = "gridwatch-manifest/1"
TIMEZONE = "Asia/Shanghai"
OFFSET_TEXT = "+08:00"
BASE_END = datetime(2026, 11, 20, 8, 0, tzinfo=timezone(timedelta(hours=8)))
STAGES = ("outline", "command units", "roads and defence", "departments", "positions", "incidents", "files")

BOUNDARIES, DEFENCE, BASEMAP = "boundaries.gpkg", "defence.gpkg", "basemap.gpkg"
UNITS_CSV, POSITIONS_CSV, INCIDENTS_CSV = "units.csv", "positions.csv", "incidents.csv"
TRUTH_GPKG = "truth/grids.gpkg"
_OUT_SUBDIRS = ("grids", "gpx", "truth")
_GEO_LAYERS = {  # layer: (file, target fields kept in the file under the same names)
    "command_unit": (BOUNDARIES, ("code", "name", "name_en", "level", "parent_code")),
    "police_area": (BOUNDARIES, ("code", "name", "name_en", "station_code")),
    "zone": (BOUNDARIES, ("kind", "name")),
    "defence_line": (DEFENCE, ("line_no", "name")),
    "checkpoint": (DEFENCE, ("code", "line_no", "name", "kind", "staffed")),
    "port": (DEFENCE, ("code", "name")),
    "sensor": (DEFENCE, ("code", "kind", "range_m", "fov_deg", "azimuth_deg", "up")),
    "road": (BASEMAP, ("code", "class", "name")),
    "river": (BASEMAP, ("name",)),
    "settlement": (BASEMAP, ("code", "name", "name_en", "kind", "households", "population")),
}
_UNIT_FIELDS = dict(zip(("callsign", "kind", "command_unit_code", "status", "area_code", "shift_start", "shift_end"),
                        UNIT_COLUMNS))
_POSITION_FIELDS = dict(zip(("callsign", "ts", "lon", "lat", "speed_kmh", "heading", "accuracy_m"), POSITION_COLUMNS))


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and its sub-folders; raise an OSError naming the folder if it is not writable."""
    try:
        for sub in _OUT_SUBDIRS:
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".gridwatch-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write the sample region into folder {out_dir}: {exc.strerror}",
                        str(out_dir)) from exc
    for old in [*(out_dir / "gpx").glob("*.gpx"), *(out_dir / "grids").glob("*.*"),
                out_dir / BOUNDARIES, out_dir / DEFENCE, out_dir / BASEMAP, out_dir / TRUTH_GPKG]:
        old.unlink(missing_ok=True)


def fixed_end(seed: int) -> datetime:
    """A fixed end for reproducible samples: 2026-11-20 08:00 +08:00 plus seed-many days (mod 28)."""
    return BASE_END + timedelta(days=seed % 28)


def _end_time(end: datetime | None) -> int:
    """Epoch seconds of the last position: ``end``, or now rounded down to the minute."""
    if end is None:
        return int(datetime.now(timezone.utc).timestamp()) // 60 * 60
    if end.tzinfo is None:
        raise ValueError("`end` must carry a time zone")
    return int(end.timestamp())


def _lonlat(fixes: Fixes) -> Fixes:
    """The same fixes with x/y turned into lon/lat (EPSG:4326)."""
    lon, lat = Transformer.from_crs(WORK_CRS, "EPSG:4326", always_xy=True).transform(fixes.x, fixes.y)
    return Fixes(fixes.unit, fixes.ts, lon, lat, fixes.speed, fixes.heading, fixes.accuracy)


def _entry(path: str, target: str, **extra: object) -> dict:
    return {"path": path, "target": target, **extra}


def generate_sample(
    out_dir: Path, *, seed: int = 1, scale: str = "prefecture", progress: bool = False, end: datetime | None = None
) -> Path:
    """Write the sample region into out_dir and return the manifest path.

    Parameters
    ----------
    out_dir : folder to write into (created if missing; files of an earlier run are replaced)
    seed : random seed; the same seed, scale and end give byte-identical files
    scale : one of ``SCALES`` ("small" for tests, "prefecture", "province" for benchmarks)
    progress : show a tqdm progress bar over the generation stages and units
    end : time of the last position (whole seconds, with a time zone); by default now, rounded
        down to the minute. The same seed, scale and end give byte-identical files, so tests and
        benchmarks pass one (``fixed_end(seed)``).
    """
    spec = scale_spec(scale)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    end_ts = _end_time(end)
    window = (end_ts - spec.hours * 3600, end_ts)
    end_day = datetime.fromtimestamp(end_ts, timezone(timedelta(hours=8))).date().isoformat()

    def rng(stage: int) -> np.random.Generator:
        return np.random.default_rng([seed, stage])

    bar = tqdm(total=len(STAGES), disable=not progress, desc="sample")

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    outline = build_outline(spec, rng(1))
    names = NameMaker(rng(2))
    step("outline")
    cu = build_command_units(spec, outline, names, rng(3))
    step("command units")
    cmd = cu.command_unit
    townships = cmd[cmd["level"] == "township"]
    stations = cmd[cmd["level"] == "station"].reset_index(drop=True)
    patrol = build_patrol_road(outline)
    roads = build_roads(spec, outline, cu.settlement, dict(zip(townships["code"], townships["parent_code"])),
                        patrol, rng(4))
    seat_xy = shapely.get_coordinates(cu.settlement.geometry[cu.settlement["kind"] == "seat"].to_numpy())[0]
    lines = build_defence_lines(spec, outline, seat_xy, rng(5))
    zones = build_zones(outline, rng(6))
    checkpoints = build_checkpoints(lines, roads.road, outline.ports, rng(7))
    sensors = build_sensors(outline, patrol, rng(8))
    rivers = build_rivers(spec, outline, names, rng(9))
    ports = gpd.GeoDataFrame(
        {"code": [f"KA{i + 1:02d}" for i in range(len(outline.ports))],
         "name": [f"{zh}口岸" for zh, _ in names.take(len(outline.ports))]},
        geometry=shapely.points(outline.ports), crs=WORK_CRS,
    )
    step("roads and defence")
    dept_rng = rng(10)
    delivered = {d.name: department_grids(cu.grid, d, dept_rng) for d in DEPARTMENTS}
    step("departments")

    plan = plan_patrols(stations, cu.grid, rng(15))
    units = build_units(spec, stations, cu.police_area, checkpoints, cu.grid, plan, end_ts, rng(11))
    fixes = simulate_positions(spec, units, roads, patrol, stations, cu.police_area, cu.grid, plan, window, rng(12),
                               progress=progress)
    fixes = _lonlat(silence_units(units, fixes, end_ts, rng(16)))
    noise_rng = rng(13)
    reporting = np.unique(fixes.unit[np.isin(units["kind"].to_numpy()[fixes.unit], ["vehicle", "foot"])])
    gpx_units = np.sort(noise_rng.choice(reporting, size=min(spec.n_gpx_units, len(reporting)), replace=False))
    in_gpx = np.isin(fixes.unit, gpx_units)
    csv_fixes, _ = add_noise(fixes.take(~in_gpx), end_ts, noise_rng)
    step("positions")
    incidents = build_incidents(spec, outline, roads.road, cu.settlement, window, LOCAL_OFFSET_S, rng(14))
    step("incidents")

    files: list[dict] = []
    with fixed_gdal_dates(end_day):
        layers = {
            "command_unit": cmd, "police_area": cu.police_area, "zone": zones,
            "defence_line": lines, "checkpoint": checkpoints, "port": ports, "sensor": sensors,
            "road": roads.road, "river": rivers, "settlement": cu.settlement,
        }
        for layer, (path, fields) in _GEO_LAYERS.items():
            write_gpkg(layers[layer], out_dir / path, layer)
            files.append(_entry(path, layer, layer=layer, crs="EPSG:4326", encoding="utf-8",
                                columns={f: f for f in fields}))
        for dept in DEPARTMENTS:
            gdf, path = delivered[dept.name], out_dir / dept.path
            if dept.path.endswith(".shp"):
                write_shapefile(gdf, path, encoding=dept.encoding, day=end_day)
            elif dept.path.endswith(".geojson"):
                write_geojson(gdf, path)
            else:
                write_gpkg(gdf, path, dept.layer, crs=gdf.crs.to_string())
            extra = {"layer": dept.layer} if dept.layer else {}
            files.append(_entry(dept.path, "grid_source", department=dept.name, **extra, crs=gdf.crs.to_string(),
                                encoding=dept.encoding, columns=dict(dept.columns)))
        write_gpkg(cu.grid, out_dir / TRUTH_GPKG, "grid")

    write_csv(units[list(UNIT_COLUMNS)], out_dir / UNITS_CSV)
    files.append(_entry(UNITS_CSV, "unit", encoding="utf-8", timezone=TIMEZONE, columns=_UNIT_FIELDS))
    callsigns = units["callsign"].to_numpy()
    write_positions_csv(out_dir / POSITIONS_CSV, callsigns, csv_fixes, LOCAL_OFFSET_S, OFFSET_TEXT)
    files.append(_entry(POSITIONS_CSV, "position", crs="EPSG:4326", encoding="utf-8", timezone=TIMEZONE,
                        columns=_POSITION_FIELDS))
    for u in gpx_units:
        mine = fixes.take(fixes.unit == u)
        path = f"gpx/{callsigns[u]}.gpx"
        write_gpx(out_dir / path, callsigns[u], mine.ts, mine.x, mine.y)
        files.append(_entry(path, "position", callsign=str(callsigns[u]), crs="EPSG:4326"))
    inc = incidents.to_crs("EPSG:4326")
    inc_table = pd.DataFrame(inc.drop(columns="geometry")).assign(
        lon=np.round(inc.geometry.x.to_numpy(), 6), lat=np.round(inc.geometry.y.to_numpy(), 6)
    )[list(INCIDENT_COLUMNS)]
    write_csv(inc_table, out_dir / INCIDENTS_CSV)
    files.append(_entry(INCIDENTS_CSV, "incident", crs="EPSG:4326", encoding="utf-8", timezone=TIMEZONE,
                        columns={c: c for c in INCIDENT_COLUMNS}))

    pref = cmd.iloc[0]
    bbox = [round(float(v), 6) for v in gpd.GeoSeries([outline.prefecture], crs=WORK_CRS).to_crs("EPSG:4326").total_bounds]
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": f"{pref['name']} {pref['name_en']} (fictional sample region)",
        "seed": seed,
        "scale": spec.name,
        "timezone": TIMEZONE,
        "bbox": bbox,
        "exported_at": datetime.fromtimestamp(end_ts, timezone(timedelta(hours=8))).isoformat(),
        "files": files,
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(_readme(manifest, len(csv_fixes), len(inc_table), len(units)), encoding="utf-8")
    step("files")
    bar.close()
    return manifest_path


_DESCRIPTIONS = {
    "command_unit": "four-level command units (prefecture, county, township, station); stations carry is_border",
    "police_area": "police areas (community-policing beats), each a union of whole grids within one station",
    "zone": "zones border_closed / port_control / social_surface, tiling the prefecture",
    "defence_line": "defence lines 1 (the border), 2 (checking line inland) and 3 (ring round the seat)",
    "checkpoint": "checkpoints: ports on line 1, road checkpoints on lines 2 and 3 (some crossings have none)",
    "port": "ports of entry on the border",
    "sensor": "fixed cameras and radars along the border (range_m, fov_deg, azimuth_deg, up)",
    "road": "roads: trunk, secondary, track and the patrol road",
    "river": "rivers",
    "settlement": "settlements: seat, towns, villages with households and population",
    "grid_source": "grids as delivered by one department (they disagree: slivers, overlaps, holes, merges, splits)",
    "unit": "patrol units: callsign, kind, station, status, area, shift (local HH:MM)",
    "position": "position fixes; ts is ISO 8601 with +08:00; about 1.4 % are spoiled on purpose",
    "incident": "incidents; times are local wall-clock time WITHOUT offset (read them in Asia/Shanghai)",
}


def _readme(manifest: dict, n_positions: int, n_incidents: int, n_units: int) -> str:
    """A README for the out folder: what each file is, its CRS and encoding."""
    civil_crs = next(f["crs"] for f in manifest["files"] if f.get("department") == "civil_affairs")
    rows = []
    for f in manifest["files"]:
        what = _DESCRIPTIONS[f["target"]]
        if f["target"] == "position" and "callsign" in f:
            what = f"GPX 1.1 track of unit {f['callsign']} (times UTC 'Z'; its fixes are only here)"
        layer = f" layer `{f['layer']}`" if "layer" in f else ""
        rows.append(f"| `{f['path']}`{layer} | {f['target']} | {f.get('crs', '')} | {f.get('encoding', 'utf-8')} | {what} |")
    return "\n".join([
        f"# {manifest['name']}",
        "",
        f"Fictional border prefecture generated by `gridwatch sample` (seed {manifest['seed']}, "
        f"scale {manifest['scale']}). No real place names, no real border. Positions end at {manifest['exported_at']}.",
        f"Time zone of times without offset: {manifest['timezone']}. bbox (lon/lat): {manifest['bbox']}.",
        f"{n_units} units, {n_positions} CSV position rows, {n_incidents} incidents.",
        "",
        "`manifest.json` lists every file, its target table and how its columns map to the target fields.",
        "",
        "| file | target | CRS | encoding | what |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        f"| `{TRUTH_GPKG}` layer `grid` | (answer key, not in the manifest) | EPSG:4326 | utf-8 | "
        "the true grids the departmental layers were derived from |",
        "",
        f"The civil-affairs Shapefile is in {civil_crs} ({pyproj.CRS(civil_crs).name}) and its attribute "
        "text is GBK-encoded; there is deliberately no .cpg file, so declare the encoding when reading it.",
        "",
    ])
