"""Place figures from hits: visits split at gaps over the cap, dwell summed, per window."""
from __future__ import annotations

import doctest
from collections import defaultdict

import numpy as np

from gridwatch.geo import coverage
from gridwatch.geo.coverage import place_figures

CAP_US = 120_000_000


def by_hand(place, fix, unit, ts, since):
    """The figures hit by hit: each place's series per unit, in time order."""
    series = defaultdict(list)
    for p, f in zip(place.tolist(), fix.tolist()):
        series[p, int(unit[f])].append(int(ts[f]))
    out = defaultdict(lambda: {"last": None, **{w: [0, 0] for w in since}})
    for (p, _), times in series.items():
        times.sort()
        for i, t in enumerate(times):
            dwell = t - times[i - 1] if i and t - times[i - 1] <= CAP_US else 0
            ends = i == len(times) - 1 or times[i + 1] - t > CAP_US
            figures = out[p]
            figures["last"] = max(figures["last"] or t, t)
            for w, start in since.items():
                if t > start:
                    figures[w][0] += ends
                    figures[w][1] += dwell
    return {p: (f["last"], {w: (f[w][0], f[w][1] / 1e6) for w in since}) for p, f in out.items()}


def test_figures_equal_a_hit_by_hit_count():
    rng = np.random.default_rng(7)
    n_fix = 400
    unit = np.sort(rng.integers(1, 6, n_fix)).astype(np.int32)
    ts = np.empty(n_fix, dtype=np.int64)
    for u in np.unique(unit):  # fixes in unit then time order, gaps on both sides of the cap
        mine = unit == u
        ts[mine] = np.cumsum(rng.choice([30_000_000, 119_000_000, 121_000_000, 900_000_000], mine.sum()))
    fix = rng.integers(0, n_fix, 900)
    place = rng.integers(0, 12, 900)
    pairs = np.unique(np.column_stack([place, fix]), axis=0)  # a fix hits a place once
    place, fix = pairs[:, 0], pairs[:, 1]
    since = {1: int(ts.max()) - 3_600_000_000, 24: -1}
    got = place_figures(place, fix, unit, ts, cap_us=CAP_US, since_us=since)
    mine = {int(p): (int(last), {w: (int(got.visits[w][i]), float(got.dwell_s[w][i])) for w in since})
            for i, (p, last) in enumerate(zip(got.place, got.last_us))}
    assert mine == by_hand(place, fix, unit, ts, since)
    assert sum(v for _, f in mine.values() for v, _ in [f[24]]) > len(mine)  # several visits per place


def test_no_hits_no_figures():
    got = place_figures(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32),
                        np.empty(0, np.int64), cap_us=CAP_US, since_us={1: 0})
    assert len(got.place) == 0 and len(got.visits[1]) == 0


def test_examples():
    assert doctest.testmod(coverage).failed == 0
