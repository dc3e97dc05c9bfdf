"""Size parameters of the three sample scales."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCALES", "ScaleSpec", "scale_spec"]


@dataclass(frozen=True)
class ScaleSpec:
    """How big each part of the sample region is at one scale."""

    name: str
    center_lonlat: tuple[float, float]
    radius_km: float
    border_km: float
    n_counties: int
    n_townships: int
    seat_grids: int
    town_grids: int
    rural_grids: int
    n_border_stations: int
    n_ports: int
    line2_km: float
    ring_km: float
    n_rivers: int
    n_units: int
    hours: int
    fix_interval_s: tuple[int, int]
    n_gpx_units: int
    incidents_per_day: int
    shortest_paths: bool


_SPECS = {
    "small": ScaleSpec(
        name="small", center_lonlat=(98.3, 23.3), radius_km=14.0, border_km=55.0,
        n_counties=1, n_townships=3, seat_grids=12, town_grids=8, rural_grids=32,
        n_border_stations=2, n_ports=1, line2_km=4.0, ring_km=2.5, n_rivers=1,
        n_units=12, hours=12, fix_interval_s=(10, 30), n_gpx_units=1,
        incidents_per_day=80, shortest_paths=True,
    ),
    "prefecture": ScaleSpec(
        name="prefecture", center_lonlat=(98.5, 23.5), radius_km=100.0, border_km=370.0,
        n_counties=4, n_townships=40, seat_grids=150, town_grids=14, rural_grids=830,
        n_border_stations=12, n_ports=2, line2_km=15.0, ring_km=10.0, n_rivers=3,
        n_units=224, hours=24, fix_interval_s=(10, 30), n_gpx_units=3,
        incidents_per_day=50, shortest_paths=True,
    ),
    "province": ScaleSpec(
        name="province", center_lonlat=(100.5, 24.2), radius_km=330.0, border_km=1600.0,
        n_counties=100, n_townships=1400, seat_grids=1500, town_grids=25, rural_grids=62000,
        n_border_stations=300, n_ports=8, line2_km=30.0, ring_km=25.0, n_rivers=12,
        n_units=20000, hours=6, fix_interval_s=(10, 20), n_gpx_units=5,
        incidents_per_day=3000, shortest_paths=False,
    ),
}

SCALES: tuple[str, ...] = tuple(_SPECS)


def scale_spec(scale: str) -> ScaleSpec:
    """Return the parameters of ``scale``; raise ValueError naming the allowed ones."""
    if scale not in _SPECS:
        raise ValueError(f"`scale` was {scale!r} but is expected to be one of {SCALES}")
    return _SPECS[scale]
