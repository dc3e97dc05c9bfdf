"""Border features: patrol road, the three defence lines, zones, checkpoints, sensors."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ._geometry import WORK_CRS, moving_average, polar_xy, running_min, smooth_noise
from ._region import Outline
from ._scale import ScaleSpec

__all__ = [
    "build_checkpoints",
    "build_defence_lines",
    "build_patrol_road",
    "build_sensors",
    "build_zones",
]

PATROL_INSET_M = 100.0
PORT_CONTROL_RADIUS_M = 3000.0
CAMERA_SPACING_M = 8000.0
RADAR_SPACING_M = 40000.0


def _arc_step(outline: Outline) -> float:
    """Mean spacing (m) of the border vertices along the smooth arc."""
    return float(outline.radius * abs(outline.arc_theta[1] - outline.arc_theta[0]))


def build_patrol_road(outline: Outline) -> shapely.LineString:
    """A patrol road just inside the border (never outside it: running minimum of the radius)."""
    step = _arc_step(outline)
    r = moving_average(running_min(outline.arc_r, 600.0 / step), 300.0 / step) - PATROL_INSET_M
    xy = polar_xy(outline.center, outline.arc_theta, r)[::2]
    road = shapely.intersection(shapely.LineString(xy), outline.prefecture)
    return max(shapely.get_parts(road), key=lambda g: g.length)


def _longest_line(geom: shapely.Geometry) -> shapely.LineString:
    return max(shapely.get_parts(shapely.line_merge(geom)), key=lambda g: g.length)


def build_defence_lines(
    spec: ScaleSpec, outline: Outline, seat: np.ndarray, rng: np.random.Generator
) -> gpd.GeoDataFrame:
    """Line 1 = the border, line 2 = a line 10-20 km inland, line 3 = a ring around the seat."""
    theta_a, theta_b = outline.arc_theta[0], outline.arc_theta[-1]
    step = _arc_step(outline)
    span = np.radians(12.0)
    theta = np.linspace(theta_a - span, theta_b + span, 3000)
    inside = np.interp(theta, outline.arc_theta, moving_average(running_min(outline.arc_r, 20000.0 / step), 10000.0 / step))
    u = (theta - theta[0]) / (theta[-1] - theta[0])
    depth = spec.line2_km * 1000.0 * (1.0 + 0.3 * np.tanh(smooth_noise(u, rng, k_min=1, k_max=6, slope=1.0)))
    blend = np.clip(np.minimum(theta - (theta_a - span), (theta_b + span) - theta) / span, 0.0, 1.0)
    blend = blend * blend * (3 - 2 * blend)
    outside = outline.outline_r(theta) + 0.12 * outline.radius
    r2 = np.where((theta >= theta_a) & (theta <= theta_b), inside - depth, outside + blend * (inside - depth - outside))
    line2 = _longest_line(shapely.intersection(shapely.LineString(polar_xy(outline.center, theta, r2)), outline.prefecture))

    ring_theta = np.linspace(0.0, 2 * np.pi, 361)
    ring_r = spec.ring_km * 1000.0 * (1.0 + 0.15 * smooth_noise(ring_theta / (2 * np.pi), rng, k_min=2, k_max=5, slope=1.0, periodic=True) / 2)
    ring_xy = polar_xy(seat, ring_theta, ring_r)
    ring_xy[-1] = ring_xy[0]
    line3 = _longest_line(shapely.intersection(shapely.LineString(ring_xy), outline.prefecture))
    return gpd.GeoDataFrame(
        {"line_no": [1, 2, 3], "name": ["第一道防线（封控线）", "第二道防线（查控线）", "第三道防线（过滤线）"],
         "name_en": ["Line 1 (sealing)", "Line 2 (checking)", "Line 3 (filtering)"]},
        geometry=[outline.border, line2, line3],
        crs=WORK_CRS,
    )


def build_zones(outline: Outline, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """border_closed strip (1-5 km deep), port_control around ports, social_surface elsewhere."""
    dist = np.arange(0.0, outline.border.length, 500.0)
    pts = shapely.line_interpolate_point(outline.border, dist)
    depth = 3000.0 + 2000.0 * np.tanh(smooth_noise(dist / outline.border.length, rng, k_min=1, k_max=12, slope=0.8))
    strip = shapely.intersection(shapely.union_all(shapely.buffer(pts, depth, quad_segs=6)), outline.prefecture)
    port = shapely.intersection(
        shapely.union_all(shapely.buffer(shapely.points(outline.ports), PORT_CONTROL_RADIUS_M)), outline.prefecture
    )
    closed = shapely.difference(strip, port)
    social = shapely.difference(outline.prefecture, shapely.union_all([closed, port]))
    return gpd.GeoDataFrame(
        {"kind": ["border_closed", "port_control", "social_surface"],
         "name": ["边境封控区", "口岸管控区", "社会面"]},
        geometry=[closed, port, social],
        crs=WORK_CRS,
    )


def _crossings(roads: gpd.GeoDataFrame, line: shapely.LineString) -> np.ndarray:
    """(n, 2) points where non-patrol roads cross ``line``, with the road index as third column."""
    ordinary = roads[roads["class"] != "patrol"]
    hits = shapely.intersection(ordinary.geometry.to_numpy(), line)
    parts, idx = shapely.get_parts(hits, return_index=True)
    pts = parts[shapely.get_type_id(parts) == 0]
    idx = idx[shapely.get_type_id(parts) == 0]
    return np.column_stack([shapely.get_x(pts), shapely.get_y(pts), ordinary.index.to_numpy()[idx]])


def build_checkpoints(
    lines: gpd.GeoDataFrame, roads: gpd.GeoDataFrame, ports: np.ndarray, rng: np.random.Generator
) -> gpd.GeoDataFrame:
    """Checkpoints at road crossings of lines 2 and 3 (a few left out), plus the ports on line 1."""
    rows: list[dict] = []
    xy: list[np.ndarray] = []
    for i, p in enumerate(ports):
        rows.append({"code": f"KA{i + 1:02d}", "line_no": 1, "name": f"{i + 1}号口岸检查站", "kind": "port", "staffed": True})
        xy.append(p)
    for line_no in (2, 3):
        cross = _crossings(roads, lines.geometry.iloc[line_no - 1])
        n = len(cross)
        missing = np.zeros(n, dtype=bool)
        if n >= 3:
            missing[rng.choice(n, size=max(1, round(0.1 * n)), replace=False)] = True
        staffed = rng.random(n) < 0.85
        if n - missing.sum() >= 4:
            staffed[rng.choice(np.flatnonzero(~missing), size=1)] = False
        for j in np.flatnonzero(~missing):
            rows.append({"code": f"L{line_no}-{len(rows) + 1:03d}", "line_no": line_no,
                         "name": f"第{line_no}道防线{len(rows) + 1}号检查站", "kind": "road_checkpoint",
                         "staffed": bool(staffed[j])})
            xy.append(cross[j, :2])
    gdf = gpd.GeoDataFrame(rows, geometry=shapely.points(np.array(xy)), crs=WORK_CRS)
    return gdf


def build_sensors(outline: Outline, patrol: shapely.LineString, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """Cameras every ~8 km and radars every ~40 km along the patrol road, facing the border."""
    parts = []
    for kind, spacing, prefix in (("camera", CAMERA_SPACING_M, "CAM"), ("radar", RADAR_SPACING_M, "RAD")):
        n = max(1, int(patrol.length // spacing))
        dist = (np.arange(n) + 0.5 + rng.uniform(-0.3, 0.3, n)) * patrol.length / n
        pts = shapely.line_interpolate_point(patrol, dist)
        to_border = shapely.get_coordinates(shapely.shortest_line(pts, outline.border)).reshape(-1, 2, 2)
        d = to_border[:, 1] - to_border[:, 0]
        azimuth = np.round(np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360.0, 1)
        camera = kind == "camera"
        parts.append(gpd.GeoDataFrame(
            {
                "code": [f"{prefix}-{i + 1:03d}" for i in range(n)],
                "kind": kind,
                "range_m": np.round(rng.uniform(1500, 4000, n) if camera else rng.uniform(8000, 15000, n), -1),
                "fov_deg": np.round(rng.uniform(60, 120, n), 0) if camera else np.full(n, np.nan),
                "azimuth_deg": azimuth if camera else np.full(n, np.nan),
                "up": rng.random(n) > 0.08,
            },
            geometry=pts, crs=WORK_CRS,
        ))
    sensors = pd.concat(parts, ignore_index=True)
    sensors.loc[0, "up"] = False  # at least one sensor is down
    return sensors
