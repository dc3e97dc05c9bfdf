"""Incidents: events at points near the border, on roads and in towns, with a status lifecycle."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

from ._geometry import WORK_CRS
from ._region import Outline
from ._scale import ScaleSpec

__all__ = ["INCIDENT_COLUMNS", "build_incidents"]

INCIDENT_COLUMNS = ("source_id", "kind", "severity", "status", "reported_at", "dispatched_at",
                    "on_scene_at", "closed_at", "lon", "lat", "note")
# kind: (where it happens, severity weights for 1..4, notes)
_KINDS = {
    "border_crossing": ("border", (0.1, 0.3, 0.4, 0.2), ("巡逻发现越界足迹，已组织搜索", "视频发现可疑人员靠近界线")),
    "intrusion_alarm": ("border", (0.4, 0.4, 0.15, 0.05), ("围栏振动报警，待核查", "红外告警，疑似野生动物")),
    "smuggling": ("border", (0.1, 0.3, 0.4, 0.2), ("便道发现可疑货物", "群众举报夜间有人搬运货物")),
    "traffic": ("road", (0.3, 0.4, 0.2, 0.1), ("两车刮擦，无人受伤", "货车侧翻占道，需疏导交通", "道路塌方阻断")),
    "dispute": ("town", (0.5, 0.35, 0.1, 0.05), ("邻里纠纷，现场调解", "集市摊位纠纷")),
    "fire": ("town", (0.2, 0.4, 0.3, 0.1), ("林边烧荒起火", "民房厨房失火，已扑灭")),
    "rescue": ("road", (0.2, 0.4, 0.3, 0.1), ("山路车辆故障求助", "河边有人被困，请求救援")),
}
_WHERE_SHARE = {"border": 0.35, "road": 0.25, "town": 0.40}


def _places(where: str, n: int, outline: Outline, road: gpd.GeoDataFrame, settlement: gpd.GeoDataFrame,
            rng: np.random.Generator) -> np.ndarray:
    """(n, 2) points for incidents of one kind of place (work CRS), all inside the prefecture."""
    if where == "border":
        at = shapely.line_interpolate_point(outline.border, rng.uniform(0, outline.border.length, n))
        xy = shapely.get_coordinates(at)
        inward = outline.center - xy
        xy = xy + inward / np.hypot(*inward.T)[:, None] * rng.uniform(200, 3000, n)[:, None]
    elif where == "road":
        lines = road.geometry.to_numpy()[road["class"].isin(["trunk", "secondary", "track"]).to_numpy()]
        pick = lines[rng.integers(len(lines), size=n)]
        xy = shapely.get_coordinates(shapely.line_interpolate_point(pick, rng.random(n), normalized=True))
    else:
        weight = settlement["households"].to_numpy(dtype=float)
        pick = rng.choice(len(settlement), size=n, p=weight / weight.sum())
        xy = shapely.get_coordinates(settlement.geometry.to_numpy()[pick]) + rng.normal(0, 400, (n, 2))
    inside = shapely.contains_xy(outline.prefecture, xy[:, 0], xy[:, 1])
    fallback = shapely.get_coordinates(settlement.geometry.to_numpy()[rng.integers(len(settlement), size=n)])
    return np.where(inside[:, None], xy, fallback)


def _local(ts: np.ndarray, offset_s: int) -> np.ndarray:
    """Local wall-clock ISO strings without offset; empty where ``ts`` is -1."""
    text = np.datetime_as_string((ts + offset_s).astype("datetime64[s]"), unit="s").astype(object)
    text[ts < 0] = ""
    return text


def build_incidents(
    spec: ScaleSpec,
    outline: Outline,
    road: gpd.GeoDataFrame,
    settlement: gpd.GeoDataFrame,
    window: tuple[int, int],
    offset_s: int,
    rng: np.random.Generator,
) -> gpd.GeoDataFrame:
    """~``incidents_per_day`` incidents over ``window``; times are local, without offset."""
    n = max(10, round(spec.incidents_per_day * (window[1] - window[0]) / 86400))
    kinds = np.array(list(_KINDS), dtype=object)
    where = np.array([_KINDS[k][0] for k in kinds])
    p = np.array([_WHERE_SHARE[w] / (where == w).sum() for w in where])
    kind = kinds[rng.choice(len(kinds), size=n, p=p)]
    xy = np.empty((n, 2))
    for w in _WHERE_SHARE:
        m = np.isin(kind, kinds[where == w])
        xy[m] = _places(w, int(m.sum()), outline, road, settlement, rng)
    severity = np.zeros(n, dtype=np.int64)
    note = np.empty(n, dtype=object)
    for k, (_, weights, notes) in _KINDS.items():
        m = kind == k
        severity[m] = rng.choice(4, size=m.sum(), p=weights) + 1
        note[m] = np.array(notes, dtype=object)[rng.integers(len(notes), size=m.sum())]

    reported = np.sort(rng.integers(window[0], window[1], n))
    dispatched = reported + rng.integers(60, 600, n)
    on_scene = dispatched + rng.integers(300, 2400, n)
    closed = on_scene + rng.integers(1200, 10800, n)
    stages = np.column_stack([dispatched, on_scene, closed])
    reached = stages <= window[1]  # every incident runs to closed within hours; the open ones are recent
    stages = np.where(reached, stages, -1)
    status = np.array(["reported", "dispatched", "on_scene", "closed"])[reached.sum(axis=1)]
    day = np.strings.replace(np.datetime_as_string((reported + offset_s).astype("datetime64[s]"), unit="D"), "-", "")
    source_id = np.strings.add(np.strings.add("JQ", day), np.strings.zfill(np.arange(1, n + 1).astype(str), 5))
    return gpd.GeoDataFrame(
        {
            "source_id": source_id,
            "kind": kind,
            "severity": severity,
            "status": status,
            "reported_at": _local(reported, offset_s),
            "dispatched_at": _local(stages[:, 0], offset_s),
            "on_scene_at": _local(stages[:, 1], offset_s),
            "closed_at": _local(stages[:, 2], offset_s),
            "note": note,
        },
        geometry=shapely.points(xy),
        crs=WORK_CRS,
    )

