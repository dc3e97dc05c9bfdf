"""The prefecture outline: a star-shaped polygon whose west/south arc is the land border."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer

from ._geometry import WORK_CRS, polar_xy, smooth_noise
from ._scale import ScaleSpec

__all__ = ["Outline", "build_outline"]

BORDER_ARC_DEG = (150.0, 290.0)  # counter-clockwise from east: north-west, west, south
_SMOOTH_GRID = 4096


@dataclass(frozen=True)
class Outline:
    """Prefecture polygon and border line in the work CRS (metres)."""

    center: np.ndarray
    radius: float
    prefecture: shapely.Polygon
    border: shapely.LineString
    arc_theta: np.ndarray  # angles of the border vertices
    arc_r: np.ndarray  # radii of the border vertices
    smooth_theta: np.ndarray
    smooth_r: np.ndarray  # outline radius without the border's fractal wander
    ports: np.ndarray  # (n, 2) points on the border

    def outline_r(self, theta: np.ndarray) -> np.ndarray:
        """Smooth outline radius at ``theta`` (no border wander)."""
        return np.interp(np.mod(theta, 2 * np.pi), self.smooth_theta, self.smooth_r, period=2 * np.pi)


def build_outline(spec: ScaleSpec, rng: np.random.Generator) -> Outline:
    """Draw the outline, tune the border wander to ``spec.border_km`` and place the ports."""
    center = np.array(
        Transformer.from_crs("EPSG:4326", WORK_CRS, always_xy=True).transform(*spec.center_lonlat)
    )
    radius = spec.radius_km * 1000.0
    smooth_theta = np.linspace(0.0, 2 * np.pi, _SMOOTH_GRID, endpoint=False)
    smooth_r = radius * (
        1.0 + 0.05 * smooth_noise(smooth_theta / (2 * np.pi), rng, k_min=2, k_max=6, slope=1.0, periodic=True)
    )
    theta_a, theta_b = np.radians(BORDER_ARC_DEG)

    n_arc = int(spec.border_km * 8)
    u = np.linspace(0.0, 1.0, n_arc)
    arc_theta = theta_a + u * (theta_b - theta_a)
    base_r = np.interp(arc_theta, smooth_theta, smooth_r, period=2 * np.pi)
    wander = smooth_noise(u, rng, k_min=1, k_max=max(n_arc // 6, 8), slope=1.0)
    wander *= np.clip(np.sin(np.pi * u) * 4.0, 0.0, 1.0)

    def arc_radius(amplitude: float) -> np.ndarray:
        return np.maximum(base_r + amplitude * wander, 0.4 * radius)

    def arc_length(amplitude: float) -> float:
        xy = polar_xy(center, arc_theta, arc_radius(amplitude))
        return float(np.hypot(*np.diff(xy, axis=0).T).sum())

    lo, hi = 0.0, 0.3 * radius
    target = spec.border_km * 1000.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if arc_length(mid) < target else (lo, mid)
    arc_r = arc_radius(0.5 * (lo + hi))
    arc_xy = polar_xy(center, arc_theta, arc_r)

    rest_theta = np.linspace(theta_b, theta_a + 2 * np.pi, 1200)[1:-1]
    rest_xy = polar_xy(center, rest_theta, np.interp(rest_theta, smooth_theta, smooth_r, period=2 * np.pi))
    prefecture = shapely.Polygon(np.vstack([arc_xy, rest_xy]))

    port_u = (np.arange(spec.n_ports) + 0.5 + rng.uniform(-0.2, 0.2, spec.n_ports)) / spec.n_ports
    ports = arc_xy[np.clip((port_u * (n_arc - 1)).astype(int), 1, n_arc - 2)]
    return Outline(
        center=center,
        radius=radius,
        prefecture=prefecture,
        border=shapely.LineString(arc_xy),
        arc_theta=arc_theta,
        arc_r=arc_r,
        smooth_theta=smooth_theta,
        smooth_r=smooth_r,
        ports=ports,
    )
