"""Small vectorized geometry helpers shared by the generator modules."""

from __future__ import annotations

import numpy as np
import shapely
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "WORK_CRS",
    "clip_to",
    "distance_to_line",
    "kmeans",
    "moving_average",
    "points_in",
    "polar_xy",
    "running_min",
    "smooth_noise",
]

WORK_CRS = "EPSG:4542"  # CGCS2000 / 3-degree Gauss-Krueger CM 99E, metres


def polar_xy(center: np.ndarray, theta: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Return (n, 2) points at angle ``theta`` (radians) and radius ``r`` from ``center``."""
    return np.column_stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)])


def smooth_noise(
    u: np.ndarray, rng: np.random.Generator, *, k_min: int, k_max: int, slope: float, periodic: bool = False
) -> np.ndarray:
    """Sum of sines over frequencies k_min..k_max (amplitude k**-slope), scaled to unit std."""
    k = np.arange(k_min, k_max + 1, dtype=float)
    phase = rng.uniform(0.0, 2.0 * np.pi, k.size)
    amp = k**-slope * rng.uniform(0.5, 1.5, k.size)
    freq = 2.0 * np.pi * k if periodic else np.pi * k
    out = np.zeros_like(u, dtype=float)
    for start in range(0, k.size, 64):  # chunks keep the (n, k) matrix small
        sl = slice(start, start + 64)
        out += np.sin(np.outer(u, freq[sl]) + phase[sl]) @ amp[sl]
    return out / max(out.std(), 1e-12)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with edge padding (same length as ``values``)."""
    window = max(1, int(window) | 1)
    padded = np.pad(values, window // 2, mode="edge")
    return sliding_window_view(padded, window).mean(axis=1)


def running_min(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running minimum with edge padding (same length as ``values``)."""
    window = max(1, int(window) | 1)
    padded = np.pad(values, window // 2, mode="edge")
    return sliding_window_view(padded, window).min(axis=1)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, *, iters: int = 12) -> np.ndarray:
    """Label (n, 2) ``points`` into ``k`` compact clusters; every label 0..k-1 is used."""
    n = len(points)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    centers = points[rng.choice(n, size=k, replace=False)]
    labels = np.zeros(n, dtype=np.int64)
    pts = shapely.points(points)
    for _ in range(iters):
        tree = shapely.STRtree(shapely.points(centers))
        src, dst = tree.query_nearest(pts, all_matches=False)
        labels[src] = dst
        counts = np.bincount(labels, minlength=k)
        empty = counts == 0
        sums = np.column_stack([np.bincount(labels, points[:, i], minlength=k) for i in (0, 1)])
        centers = np.where(empty[:, None], centers, sums / np.maximum(counts, 1)[:, None])
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def points_in(polygon: shapely.Geometry, n: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``n`` uniformly random (n, 2) points inside ``polygon``."""
    minx, miny, maxx, maxy = polygon.bounds
    shapely.prepare(polygon)
    ratio = max(polygon.area / max((maxx - minx) * (maxy - miny), 1e-9), 0.02)
    out = np.empty((0, 2))
    while len(out) < n:
        m = int((n - len(out)) / ratio * 1.3) + 16
        cand = np.column_stack([rng.uniform(minx, maxx, m), rng.uniform(miny, maxy, m)])
        out = np.vstack([out, cand[shapely.contains_xy(polygon, cand[:, 0], cand[:, 1])]])
    return out[:n]


def distance_to_line(points: np.ndarray, line: shapely.LineString) -> np.ndarray:
    """Distance from each (n, 2) point to a long ``line``, via a tree of its segments."""
    coords = shapely.get_coordinates(line)
    segments = shapely.linestrings(np.stack([coords[:-1], coords[1:]], axis=1))
    tree = shapely.STRtree(segments)
    (src, _), dist = tree.query_nearest(shapely.points(points), all_matches=False, return_distance=True)
    out = np.empty(len(points))
    out[src] = dist
    return out


def clip_to(geoms: np.ndarray, polygon: shapely.Geometry) -> np.ndarray:
    """Intersect ``geoms`` with ``polygon``, touching only those that cross its boundary."""
    shapely.prepare(polygon)
    inside = shapely.contains(polygon, geoms)
    out = geoms.copy()
    out[~inside] = shapely.intersection(geoms[~inside], polygon)
    return out
