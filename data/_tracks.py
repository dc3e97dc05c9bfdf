"""Patrol units, their shifts, and 10-30 s position fixes that move like real patrols."""

from __future__ import annotations

from dataclasses import dataclass, fields

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely
from tqdm import tqdm

from ._geometry import points_in
from ._roads import SPEED_KMH, RoadNetwork
from ._scale import ScaleSpec

__all__ = ["Fixes", "PatrolPlan", "UNIT_COLUMNS", "add_noise", "build_units", "plan_patrols", "silence_units",
           "simulate_positions"]

LOCAL_OFFSET_S = 8 * 3600  # Asia/Shanghai has no daylight saving
UNIT_KINDS = ("foot", "vehicle", "drone", "post", "checkpoint")
UNIT_COLUMNS = ("callsign", "kind", "station", "status", "area", "shift_start", "shift_end")
_KIND_LETTER = {"foot": "F", "vehicle": "V", "drone": "D", "post": "G", "checkpoint": "C"}
# name: (start minute of the local day, duration in minutes)
SHIFTS = {"day": (480, 720), "night": (1200, 720), "early": (360, 480), "late": (840, 480), "full": (0, 1440)}
_SHIFT_CHOICE = {
    "drone": (("day", "early", "late"), (0.5, 0.25, 0.25)),
    "post": (("full", "day", "night"), (0.6, 0.2, 0.2)),
    "checkpoint": (("full", "day", "night"), (0.6, 0.2, 0.2)),
}
_PATROL_TURNS = ("day", "night", "early", "late")
_BORDER_TURNS = ("day", "night")  # the shifts of a border station's vehicle pair: its stretch round the clock
BORDER_VEHICLES = len(_BORDER_TURNS)
QUIET_SHIFT = "day"  # the only shift the quiet border station works: nobody on its stretch overnight
SILENT_SHARE = 0.04  # units on duty at the end whose fixes stop 1-3 h before it
# share of each noise kind among the delivered CSV rows
NOISE_RATES = {"duplicate": 0.004, "out_of_order": 0.003, "zero": 0.001, "swapped": 0.001,
               "jump": 0.001, "future": 0.001, "low_accuracy": 0.003}


@dataclass
class Fixes:
    """Column arrays of position fixes (one row per fix)."""

    unit: np.ndarray  # int32 index into the units table
    ts: np.ndarray  # int64 seconds since the epoch (UTC)
    x: np.ndarray  # lon once projected
    y: np.ndarray  # lat once projected
    speed: np.ndarray  # km/h
    heading: np.ndarray  # degrees clockwise from north
    accuracy: np.ndarray  # metres

    def take(self, idx: np.ndarray) -> Fixes:
        """Rows ``idx`` (an index array or a boolean mask) as new Fixes."""
        return Fixes(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[Fixes]) -> Fixes:
        """Stack several Fixes."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.ts)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class PatrolPlan:
    """Where the patrols go: every grid is on some station's round, with two gaps a real roster has."""

    short_township: str  # township code whose stations get no patrol units of their own
    quiet_station: int  # row of the border station that works days only: its stretch is quiet overnight


def plan_patrols(stations: gpd.GeoDataFrame, grid: gpd.GeoDataFrame, rng: np.random.Generator) -> PatrolPlan:
    """Pick the township short of patrols (the one with the fewest grids among those without a border
    station, if there are any) and the quiet border station."""
    is_border = stations["is_border"].to_numpy()
    township = stations["parent_code"].to_numpy()
    inland = np.setdiff1d(township, township[is_border])
    pool = inland if inland.size else np.unique(township)
    short = str(grid["township_code"].value_counts().reindex(pool, fill_value=0).idxmin())
    border = np.flatnonzero(is_border & (township != short))
    return PatrolPlan(short, int(border[rng.integers(len(border))]) if border.size else -1)


def _station_of(points: np.ndarray, stations: gpd.GeoDataFrame) -> np.ndarray:
    """Row of the station nearest to (or containing) each point."""
    tree = shapely.STRtree(stations.geometry.to_numpy())
    src, dst = tree.query_nearest(shapely.points(points), all_matches=False)
    out = np.empty(len(points), dtype=np.int64)
    out[src] = dst
    return out


def build_units(
    spec: ScaleSpec,
    stations: gpd.GeoDataFrame,
    police_area: gpd.GeoDataFrame,
    checkpoint: gpd.GeoDataFrame,
    grid: gpd.GeoDataFrame,
    plan: PatrolPlan,
    end_ts: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """The unit roster: crews at staffed checkpoints, posts, drones and a vehicle pair (day and night) at
    border stations, the rest patrols, shared out by the grids each station has to cover (none to the short
    township's stations)."""
    stations = stations.reset_index(drop=True)
    border = np.flatnonzero(stations["is_border"].to_numpy()) if stations["is_border"].any() else np.arange(len(stations))
    post_border = np.setdiff1d(border, [plan.quiet_station]) if len(border) > 1 else border
    staffed = checkpoint[checkpoint["staffed"]]
    n_crew = min(len(staffed), spec.n_units // 4)
    crew_cp = np.sort(rng.choice(len(staffed), size=n_crew, replace=False))
    crew_xy = shapely.get_coordinates(staffed.geometry.to_numpy()[crew_cp]).reshape(-1, 2)
    n_post = max(1, round(0.08 * spec.n_units))
    n_drone = max(1, round(0.05 * spec.n_units))
    n_rest = spec.n_units - n_crew - n_post - n_drone
    # Each border station's own vehicle pair drives its stretch of the patrol road, one by day, one by night.
    border_pairs = np.flatnonzero(stations["is_border"].to_numpy())[: n_rest // (4 * BORDER_VEHICLES)]
    border_vehicle = np.repeat(border_pairs, BORDER_VEHICLES)
    n_rest -= len(border_vehicle)
    n_vehicle = round(0.45 * n_rest)
    n_grids = grid["station_code"].value_counts().reindex(stations["code"], fill_value=0).to_numpy()
    weight = (n_grids + 2.0) * np.where(stations["is_border"].to_numpy(), 1.5, 1.0)
    weight[stations["parent_code"].to_numpy() == plan.short_township] = 0.0
    # As a roster shares patrols out: each station its share by weight (largest remainders), its first
    # patrols vehicles, so every station with a share has a vehicle round of its grids.
    share = weight / weight.sum() * n_rest
    quota = np.floor(share).astype(np.int64)
    quota[np.lexsort((rng.random(len(share)), quota - share))[: n_rest - quota.sum()]] += 1
    patrol_station = np.repeat(np.arange(len(stations)), quota)
    rank = np.arange(n_rest) - np.repeat(np.cumsum(quota) - quota, quota)
    patrol_station = patrol_station[np.lexsort((rng.random(n_rest), rank))]
    kind = np.array(["checkpoint"] * n_crew + ["post"] * n_post + ["drone"] * n_drone
                    + ["vehicle"] * (len(border_vehicle) + n_vehicle) + ["foot"] * (n_rest - n_vehicle), dtype=object)
    station = np.concatenate([
        _station_of(crew_xy, stations), rng.choice(post_border, n_post), rng.choice(border, n_drone), border_vehicle,
        patrol_station,
    ]).astype(np.int64)
    border_turn = np.zeros(len(kind), dtype=bool)
    border_turn[n_crew + n_post + n_drone : n_crew + n_post + n_drone + len(border_vehicle)] = True
    anchor = np.full((len(kind), 2), np.nan)
    anchor[:n_crew] = crew_xy
    order = np.lexsort((np.arange(len(kind)), kind, station))
    kind, station, anchor, border_turn = kind[order], station[order], anchor[order], border_turn[order]

    station_code = stations["code"].to_numpy()[station]
    area_code = station_code.copy()
    foot = np.flatnonzero(kind == "foot")
    areas_of = police_area.groupby("station_code").indices
    area_codes = police_area["code"].to_numpy()
    area_code[foot] = [area_codes[rng.choice(areas_of[c])] for c in station_code[foot]]

    is_border = stations["is_border"].to_numpy()
    rank = np.zeros(len(stations), dtype=np.int64)
    for flag in (True, False):
        rank[is_border == flag] = np.arange((is_border == flag).sum()) + 1
    width = len(str(len(stations)))
    seq = pd.DataFrame({"s": station, "k": kind}).groupby(["s", "k"]).cumcount().to_numpy() + 1
    callsign = [f"{'B' if is_border[s] else 'P'}{rank[s]:0{max(2, width)}d}-{_KIND_LETTER[k]}{n:02d}"
                for s, k, n in zip(station, kind, seq)]

    patrols = np.isin(kind, ["foot", "vehicle"])  # a station's patrols take the shifts in turn, round the clock
    turn = rng.integers(len(_PATROL_TURNS), size=len(stations))[station] + seq - 1
    shift = np.array(_PATROL_TURNS, dtype=object)[turn % len(_PATROL_TURNS)]
    shift[~patrols] = [rng.choice(_SHIFT_CHOICE[k][0], p=_SHIFT_CHOICE[k][1]) for k in kind[~patrols]]
    pair_seq = pd.Series(station[border_turn]).groupby(station[border_turn]).cumcount().to_numpy()
    shift[border_turn] = np.array(_BORDER_TURNS, dtype=object)[pair_seq % len(_BORDER_TURNS)]
    shift[station == plan.quiet_station] = QUIET_SHIFT
    start_min = np.array([SHIFTS[s][0] for s in shift])
    dur_min = np.array([SHIFTS[s][1] for s in shift])
    end_minute = ((end_ts + LOCAL_OFFSET_S) % 86400) // 60
    on_now = ((end_minute - start_min) % 1440) < dur_min
    status = np.where(on_now, np.where(rng.random(len(kind)) < 0.15, "responding", "on_duty"), "off_duty")
    return pd.DataFrame({
        "callsign": callsign,
        "kind": kind,
        "station": station_code,
        "status": status,
        "area": area_code,
        "shift_start": [_hhmm(m) for m in start_min],
        "shift_end": [_hhmm((m + d) % 1440) if d < 1440 else "24:00" for m, d in zip(start_min, dur_min)],
        "shift_start_min": start_min,
        "shift_minutes": dur_min,
        "station_row": station,
        "border_round": border_turn,
        "anchor_x": anchor[:, 0],
        "anchor_y": anchor[:, 1],
    })


def _shift_intervals(start_min: int, dur_min: int, window: tuple[int, int]) -> list[tuple[int, int]]:
    """UTC (start, end) seconds of the shifts that overlap ``window``."""
    local_midnight = (window[1] + LOCAL_OFFSET_S) // 86400 * 86400 - LOCAL_OFFSET_S
    out = []
    for day in range(-(window[1] - window[0]) // 86400 - 2, 1):
        a = local_midnight + day * 86400 + start_min * 60
        lo, hi = max(a, window[0]), min(a + dur_min * 60, window[1])
        if hi - lo > 60:
            out.append((lo, hi))
    return out


class _Router:
    """Builds timed routes (vertices with arrival times) for one kind of movement."""

    def __init__(self, spec: ScaleSpec, roads: RoadNetwork, patrol: shapely.LineString,
                 stations: gpd.GeoDataFrame, police_area: gpd.GeoDataFrame, grid: gpd.GeoDataFrame,
                 plan: PatrolPlan) -> None:
        self.spec = spec
        self.roads = roads
        self.patrol = patrol
        self.road_xy = [shapely.get_coordinates(g) for g in roads.road.geometry.to_numpy()]
        self.road_class = roads.road["class"].to_numpy()
        self.stations = stations.reset_index(drop=True)
        self.area_geom = dict(zip(police_area["code"], police_area.geometry))
        main = max(nx.connected_components(roads.graph), key=len)
        self.main_nodes = np.array(sorted(main))
        self.grid_xy = shapely.get_coordinates(shapely.point_on_surface(grid.geometry.to_numpy()))
        main_xy = self.roads.node_xy[self.main_nodes]
        self.grid_node = self.main_nodes[shapely.STRtree(shapely.points(main_xy)).query_nearest(
            shapely.points(self.grid_xy), all_matches=False)[1]]
        self.grids_of_station = grid.groupby("station_code").indices
        self.grids_of_area = grid.groupby("police_area_code").indices
        quiet = self.stations.geometry.iloc[plan.quiet_station] if plan.quiet_station >= 0 else None
        pn = np.intersect1d(self.roads.patrol_nodes, self.main_nodes)
        if quiet is not None:  # no other station's round passes the quiet stretch
            pn = pn[shapely.distance(quiet, shapely.points(self.roads.node_xy[pn])) > 2000.0]
        self.patrol_round_nodes = pn
        self.quiet_station = plan.quiet_station
        self.stretch = self._stretches()
        self._candidates: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    def candidates(self, station: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(home node, stop nodes, stop points) of the round of ``station``'s vehicles: a stop at every
        grid of the station (the road node nearest it, then off the road to the grid), and for a border
        station every other stop on the patrol road within 15 km; in an order its vehicles share."""
        if station not in self._candidates:
            geom = self.stations.geometry.iloc[station]
            mine = self.grids_of_station.get(self.stations["code"].iloc[station], np.empty(0, dtype=np.int64))
            order = np.random.default_rng(station)
            mine = mine[order.permutation(len(mine))]
            nodes, points = self.grid_node[mine], self.grid_xy[mine]
            if self.stations["is_border"].iloc[station]:
                pn = self.patrol_round_nodes
                if station == self.quiet_station:
                    pn = np.intersect1d(self.roads.patrol_nodes, self.main_nodes)
                near = pn[shapely.distance(geom, shapely.points(self.roads.node_xy[pn])) < 15000.0]
                near = near[order.permutation(len(near))]
                if near.size:  # every other stop is on the patrol road
                    m = max(len(nodes), len(near))
                    k = np.arange(m)
                    grid_stops = (k % len(nodes)) if len(nodes) else np.empty(0, dtype=np.int64)
                    nodes = np.column_stack([nodes[grid_stops], near[k % len(near)]]).ravel() if len(nodes) else near
                    points = (np.stack([points[grid_stops], self.roads.node_xy[near[k % len(near)]]], axis=1)
                              .reshape(-1, 2) if len(points) else self.roads.node_xy[near])
            rep = shapely.get_coordinates(geom.representative_point())[0]
            if nodes.size < 2:
                nodes = self.main_nodes[np.argsort(np.hypot(*(self.roads.node_xy[self.main_nodes] - rep).T))[:5]]
                points = self.roads.node_xy[nodes]
            home = int(nodes[np.argmin(np.hypot(*(self.roads.node_xy[nodes] - rep).T))])
            self._candidates[station] = (home, nodes, points)
        return self._candidates[station]

    def _stretches(self) -> dict[int, tuple[float, float]]:
        """Each border station's stretch of the patrol road (from, to, along it): the part nearer to it
        than to any other border station."""
        border = np.flatnonzero(self.stations["is_border"].to_numpy())
        if border.size == 0:
            return {}
        at = self.patrol.project(shapely.point_on_surface(self.stations.geometry.to_numpy()[border]))
        order = np.argsort(at, kind="stable")
        cuts = np.concatenate([[0.0], (at[order][1:] + at[order][:-1]) / 2, [self.patrol.length]])
        return {int(border[o]): (float(cuts[i]), float(cuts[i + 1])) for i, o in enumerate(order)}

    def border_patrol(self, station: int, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Drive the station's stretch of the patrol road end to end and back at patrol speed, from a
        random point of it on, 5-15 min at each end."""
        lo, hi = self.stretch[station]
        along = np.linspace(lo, hi, max(2, int((hi - lo) // 200.0) + 1))
        lap = np.concatenate([along, along[-2:0:-1]])  # there and back, each point once
        lap = np.roll(lap, -int(rng.integers(len(lap))))
        pts = shapely.get_coordinates(shapely.line_interpolate_point(self.patrol, lap))
        speed = rng.uniform(*SPEED_KMH["patrol"]) / 3.6
        steps = np.full((len(lap), 2), np.nan)  # per point: the drive from the one before, the pause there
        steps[:, 0] = np.hypot(*np.diff(np.vstack([pts[-1:], pts]), axis=0).T) / speed
        at_end = np.isin(lap, [lo, hi])
        steps[at_end, 1] = rng.uniform(300, 900, at_end.sum())
        xy_lap, dt_lap = np.repeat(pts, np.where(at_end, 2, 1), axis=0), steps[~np.isnan(steps)]
        n = int(duration // dt_lap.sum()) + 1
        dt = np.tile(dt_lap, n)
        dt[0] = 0.0
        return np.tile(xy_lap, (n, 1)), np.cumsum(dt)

    def _path(self, a: int, b: int, rng: np.random.Generator) -> list[int]:
        if self.spec.shortest_paths:
            return nx.shortest_path(self.roads.graph, a, b, weight="length")
        path = [a]
        for _ in range(int(rng.integers(2, 8))):
            nbrs = sorted(self.roads.graph.neighbors(path[-1]))
            if len(path) > 1 and len(nbrs) > 1:
                nbrs.remove(path[-2])
            path.append(int(nbrs[rng.integers(len(nbrs))]))
        return path

    def vehicle(self, station: int, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Drive the station's round from a random stop on, off the road to each grid at 15 km/h and
        back, stopping 2-8 min at each."""
        home, dests, stops = self.candidates(station)
        order = np.roll(np.arange(len(dests)), -int(rng.integers(len(dests))))
        speed = {c: rng.uniform(*SPEED_KMH[c]) / 3.6 for c in SPEED_KMH}
        xy, dt = [self.roads.node_xy[home][None]], [np.zeros(1)]
        total, cur, k = 0.0, home, 0
        while total < duration:
            stop = order[k % len(order)]
            k += 1
            dest = int(dests[stop])
            path = self._path(cur, dest, rng) if dest != cur else [cur]
            for a, b in zip(path[:-1], path[1:]):
                edge = self.roads.graph.edges[a, b]
                coords = self.road_xy[edge["road"]]
                coords = coords if edge["start"] == a else coords[::-1]
                seg = np.hypot(*np.diff(coords, axis=0).T) / speed[self.road_class[edge["road"]]]
                xy.append(coords[1:])
                dt.append(seg)
                total += seg.sum()
            cur = path[-1]
            node_xy, off = self.roads.node_xy[cur], np.hypot(*(stops[stop] - self.roads.node_xy[cur])) / (15 / 3.6)
            pause = rng.uniform(120, 480)
            xy.append(np.vstack([stops[stop], stops[stop], node_xy]))
            dt.append(np.array([off, pause, off]))
            total += pause + 2 * off
        return np.vstack(xy), np.cumsum(np.concatenate(dt))

    def foot(self, area_code: str, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Walk the grids of the police area in a random order at 3-5 km/h, with a random point of
        the area between two grids, pausing 1-15 min at each."""
        geom = self.area_geom[area_code]
        speed = rng.uniform(0.8, 1.4)
        start = shapely.get_coordinates(geom.representative_point())
        xy, dt = [start], [np.zeros(1)]
        total = 0.0
        mine = self.grid_xy[self.grids_of_area.get(area_code, np.empty(0, dtype=np.int64))]
        while total < duration:
            pts = points_in(geom, max(len(mine), 1), rng)
            if len(mine):
                pts = np.column_stack([mine[rng.permutation(len(mine))], pts]).reshape(-1, 2)
            walk = np.hypot(*np.diff(np.vstack([xy[-1][-1:], pts]), axis=0).T) / speed
            pause = rng.uniform(60, 900, len(pts))
            xy.append(np.repeat(pts, 2, axis=0))
            dt.append(np.column_stack([walk, pause]).ravel())
            total += walk.sum() + pause.sum()
        return np.vstack(xy), np.cumsum(np.concatenate(dt))

    def drone(self, station: int, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sorties back and forth along 6-16 km of the patrol road, 15-30 min on the ground between."""
        rep = self.stations.geometry.iloc[station].representative_point()
        base = self.patrol.project(rep)
        reach = rng.uniform(3000, 8000)
        lo, hi = max(0.0, base - reach), min(self.patrol.length, base + reach)
        there = np.concatenate([np.linspace(base, hi, 40), np.linspace(hi, lo, 80), np.linspace(lo, base, 40)])
        sortie = shapely.get_coordinates(shapely.line_interpolate_point(self.patrol, there))
        speed = rng.uniform(14.0, 20.0)
        leg = np.hypot(*np.diff(sortie, axis=0).T) / speed
        n = int(duration // (leg.sum() + 900.0)) + 1
        pause = rng.uniform(900, 1800, n)
        # per sortie: landed at base, take off after the pause, fly the loop back to base
        dt = np.concatenate([np.concatenate([[0.0, p], leg]) for p in pause])
        xy = np.tile(np.vstack([sortie[:1], sortie]), (n, 1))
        return xy, np.cumsum(dt)

    def still(self, point: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
        """A post or checkpoint crew that does not move."""
        return np.vstack([point, point]), np.array([0.0, duration])

    def post_point(self, station: int, rng: np.random.Generator) -> np.ndarray:
        """A sentry post on the patrol road within the station's stretch."""
        rep = self.stations.geometry.iloc[station].representative_point()
        at = self.patrol.project(rep) + rng.uniform(-3000, 3000)
        return shapely.get_coordinates(self.patrol.interpolate(np.clip(at, 0.0, self.patrol.length)))[0]


def _fix_times(start: int, end: int, interval: int, rng: np.random.Generator) -> np.ndarray:
    """Report times every ``interval`` s (+-2 s) from ``start`` to ``end``."""
    n = (end - start) // max(interval - 2, 1) + 2
    dt = np.maximum(interval + rng.integers(-2, 3, n), 5)
    ts = start + int(rng.integers(0, interval)) + np.cumsum(dt) - dt[0]
    return ts[ts < end]


def simulate_positions(
    spec: ScaleSpec,
    units: pd.DataFrame,
    roads: RoadNetwork,
    patrol: shapely.LineString,
    stations: gpd.GeoDataFrame,
    police_area: gpd.GeoDataFrame,
    grid: gpd.GeoDataFrame,
    plan: PatrolPlan,
    window: tuple[int, int],
    rng: np.random.Generator,
    *,
    progress: bool = False,
) -> Fixes:
    """Fixes of every unit while on shift in ``window`` (work CRS, no delivery noise yet)."""
    router = _Router(spec, roads, patrol, stations, police_area, grid, plan)
    parts: list[Fixes] = []
    rows = units.itertuples(index=True)
    for u in tqdm(rows, total=len(units), disable=not progress, desc="units", leave=False):
        interval = int(rng.integers(spec.fix_interval_s[0], spec.fix_interval_s[1] + 1))
        if u.kind == "checkpoint":
            point = np.array([u.anchor_x, u.anchor_y])
        elif u.kind == "post":
            point = router.post_point(u.station_row, rng)
        for lo, hi in _shift_intervals(u.shift_start_min, u.shift_minutes, window):
            duration = float(hi - lo)
            if u.kind == "vehicle" and u.border_round:
                route_xy, route_t = router.border_patrol(u.station_row, duration, rng)
            elif u.kind == "vehicle":
                route_xy, route_t = router.vehicle(u.station_row, duration, rng)
            elif u.kind == "foot":
                route_xy, route_t = router.foot(u.area, duration, rng)
            elif u.kind == "drone":
                route_xy, route_t = router.drone(u.station_row, duration, rng)
            else:
                route_xy, route_t = router.still(point, duration)
            ts = _fix_times(lo, hi, interval, rng)
            if u.kind in ("vehicle", "foot") and rng.random() < 0.3 and len(ts) > 10:  # a signal dropout
                cut = ts[rng.integers(len(ts))]
                ts = ts[(ts < cut) | (ts > cut + rng.integers(600, 2400))]
            if len(ts) < 2:
                continue
            rel = (ts - lo).astype(float)
            x, y = np.interp(rel, route_t, route_xy[:, 0]), np.interp(rel, route_t, route_xy[:, 1])
            dx, dy, dt = np.diff(x), np.diff(y), np.diff(rel)
            dx, dy, dt = np.append(dx, dx[-1]), np.append(dy, dy[-1]), np.append(dt, dt[-1])
            speed = np.hypot(dx, dy) / dt * 3.6
            heading = np.where(speed > 0.5, np.degrees(np.arctan2(dx, dy)) % 360.0, 0.0)
            acc = np.clip(rng.lognormal(np.log(4.0 if u.kind == "drone" else 6.0), 0.45, len(ts)), 2.0, 60.0)
            parts.append(Fixes(
                unit=np.full(len(ts), u.Index, dtype=np.int32),
                ts=ts.astype(np.int64),
                x=x + rng.normal(0.0, 1.0, len(ts)) * acc / 2,
                y=y + rng.normal(0.0, 1.0, len(ts)) * acc / 2,
                speed=np.round(speed, 1).astype(np.float32),
                heading=np.round(heading).astype(np.float32),
                accuracy=np.round(acc, 1).astype(np.float32),
            ))
    return Fixes.concat(parts)


def silence_units(units: pd.DataFrame, fixes: Fixes, end_ts: int, rng: np.random.Generator) -> Fixes:
    """Drop the last 1-3 h of fixes of a few moving units on duty at the end for 2 h or more: they
    reported for at least half an hour of their shift, then went silent."""
    end_minute = ((end_ts + LOCAL_OFFSET_S) % 86400) // 60
    on_for = ((end_minute - units["shift_start_min"].to_numpy()) % 1440) * 60
    moving = units["kind"].isin(["foot", "vehicle", "drone"]).to_numpy() & (units["status"] != "off_duty").to_numpy()
    pool = np.flatnonzero(moving & (on_for >= 2 * 3600))
    silent = rng.choice(pool, size=min(len(pool), max(1, round(SILENT_SHARE * len(units)))), replace=False)
    since = np.full(len(units), np.iinfo(np.int64).max)
    since[silent] = end_ts - rng.uniform(3600, np.minimum(3 * 3600, on_for[silent] - 1800)).astype(np.int64)
    return fixes.take(fixes.ts < since[fixes.unit])


def add_noise(fixes: Fixes, end_ts: int, rng: np.random.Generator) -> tuple[Fixes, dict[str, int]]:
    """Spoil ~1.4 % of the rows like a real feed does; return the rows in delivery order and the counts.

    ``fixes`` must hold lon/lat degrees in ``x``/``y``.
    """
    n = len(fixes)
    cut = np.cumsum(list(NOISE_RATES.values()))
    kind = np.searchsorted(cut, rng.random(n), side="right")  # == len(cut) means clean
    names = list(NOISE_RATES)
    out = fixes.take(np.arange(n))
    mask = {name: kind == i for i, name in enumerate(names)}

    out.x[mask["zero"]] = 0.0
    out.y[mask["zero"]] = 0.0
    sw = mask["swapped"]
    out.x[sw], out.y[sw] = fixes.y[sw], fixes.x[sw]
    jump = mask["jump"]
    angle = rng.uniform(0, 2 * np.pi, jump.sum())
    dist = rng.uniform(0.5, 3.0, jump.sum())
    out.x[jump] += dist * np.cos(angle)
    out.y[jump] += dist * np.sin(angle)
    fut = mask["future"]
    out.ts[fut] = end_ts + 86400 + rng.integers(3600, 2 * 86400, fut.sum())
    low = mask["low_accuracy"]
    out.accuracy[low] = np.round(rng.uniform(600, 3000, low.sum()), 1)
    out.x[low] += rng.normal(0, 1, low.sum()) * out.accuracy[low] / 3 / 102000.0
    out.y[low] += rng.normal(0, 1, low.sum()) * out.accuracy[low] / 3 / 111000.0

    key = out.ts.copy()
    key[mask["out_of_order"]] += rng.integers(120, 900, mask["out_of_order"].sum())
    dup = np.flatnonzero(mask["duplicate"])
    out = Fixes.concat([out, out.take(dup)])
    key = np.concatenate([key, key[dup]])
    order = np.lexsort((out.unit, key))
    counts = {name: int(m.sum()) for name, m in mask.items()}
    return out.take(order), counts
