"""Tracks of fixes as whole columns: great-circle distance and the implied-speed filter.

A fix is too fast when the speed implied from its unit's previous accepted fix
exceeds that unit's limit, the check a tracking server makes before it stores a
fix. Both the file loader and the live ingest use :func:`too_fast`; each brings
the unit's last stored fix before the batch as a *seed*.
"""
from __future__ import annotations

import numpy as np

__all__ = ["EARTH_RADIUS_M", "haversine_m", "too_fast"]

EARTH_RADIUS_M = 6_371_008.8
MAX_SPEED_ROUNDS = 20


def haversine_m(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres, element-wise.

    >>> round(float(haversine_m(100.0, 22.0, 100.0, 22.01)))
    1112
    """
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(np.subtract(lon2, lon1)) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def too_fast(
    unit_id: np.ndarray, ts_us: np.ndarray, lon: np.ndarray, lat: np.ndarray, max_kmh: np.ndarray,
    *, seeds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Which fixes imply a speed above their ``max_kmh`` from the unit's previous accepted fix.

    ``seeds`` (unit id, time in Unix microseconds, lon, lat) are fixes already
    stored, each earlier than its unit's first fix here; they are never rejected.
    Whole-column rounds: each round rejects the first fix of every run of too-fast
    fixes, so a lone outlier does not also condemn the good fix after it (which is
    then compared with the fix before the outlier); a round looks again only at the
    units the round before rejected a fix of.

    >>> t = np.array([0, 60, 120]) * 1_000_000
    >>> too_fast(np.array([1, 1, 1]), t, np.array([100.0, 101.0, 100.001]), np.full(3, 22.0), np.full(3, 50.0))
    array([False,  True, False])
    """
    n = len(unit_id)
    if n == 0:
        return np.zeros(0, dtype=bool)
    seed_unit, seed_ts, seed_lon, seed_lat = seeds if seeds is not None else (np.empty(0, np.int64),) * 4
    m = len(seed_unit)
    u = np.r_[np.asarray(unit_id, dtype=np.int64), np.asarray(seed_unit, dtype=np.int64)]
    t = np.r_[np.asarray(ts_us, dtype=np.int64), np.asarray(seed_ts, dtype=np.int64)]
    x = np.r_[np.asarray(lon, dtype=np.float64), np.asarray(seed_lon, dtype=np.float64)]
    y = np.r_[np.asarray(lat, dtype=np.float64), np.asarray(seed_lat, dtype=np.float64)]
    limit = np.r_[np.asarray(max_kmh, dtype=np.float64), np.full(m, np.inf)]
    row = np.r_[np.arange(n), np.full(m, -1)]
    order = np.lexsort((t, u))
    u, t, x, y, limit, row = u[order], t[order], x[order], y[order], limit[order], row[order]
    alive = np.ones(len(u), dtype=bool)
    unit_of = np.r_[0, np.cumsum(u[1:] != u[:-1])]  # each fix's unit, numbered in sorted order
    checking = np.ones(unit_of[-1] + 1, dtype=bool)  # units a round rejected a fix of: only they can change
    for round_no in range(MAX_SPEED_ROUNDS):
        live = np.flatnonzero(alive & checking[unit_of])
        hours = np.diff(t[live]) / 3.6e9
        kmh = haversine_m(x[live][:-1], y[live][:-1], x[live][1:], y[live][1:]) / 1000.0 / np.maximum(hours, 1e-9)
        offender = np.r_[False, (u[live][1:] == u[live][:-1]) & (kmh > limit[live][1:])]
        if not offender.any():
            break
        if round_no < MAX_SPEED_ROUNDS - 1:
            offender &= ~np.r_[False, offender[:-1]]
        alive[live[offender]] = False
        checking[:] = False
        checking[unit_of[live[offender]]] = True
    out = np.zeros(n, dtype=bool)
    out[row[~alive & (row >= 0)]] = True
    return out
